// Original file: proto/warden/v1/warden.proto

import type { Scope as _warden_v1_Scope, Scope__Output as _warden_v1_Scope__Output } from '../../warden/v1/Scope';
import type { Metric as _warden_v1_Metric, Metric__Output as _warden_v1_Metric__Output } from '../../warden/v1/Metric';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp';
import type { Long } from '@grpc/proto-loader';

export interface LimitStatus {
  'policyId'?: (string);
  'scope'?: (_warden_v1_Scope | null);
  'metric'?: (_warden_v1_Metric);
  'limit'?: (number | string | Long);
  'remaining'?: (number | string | Long);
  'resetTime'?: (_google_protobuf_Timestamp | null);
}

export interface LimitStatus__Output {
  'policyId': (string);
  'scope': (_warden_v1_Scope__Output | null);
  'metric': (_warden_v1_Metric__Output);
  'limit': (number);
  'remaining': (number);
  'resetTime': (_google_protobuf_Timestamp__Output | null);
}
