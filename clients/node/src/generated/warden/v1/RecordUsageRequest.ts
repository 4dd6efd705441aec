// Original file: proto/warden/v1/warden.proto

import type { Usage as _warden_v1_Usage, Usage__Output as _warden_v1_Usage__Output } from '../../warden/v1/Usage';
import type { Outcome as _warden_v1_Outcome, Outcome__Output as _warden_v1_Outcome__Output } from '../../warden/v1/Outcome';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration';
import type { Subject as _warden_v1_Subject, Subject__Output as _warden_v1_Subject__Output } from '../../warden/v1/Subject';
import type { Long } from '@grpc/proto-loader';

export interface RecordUsageRequest {
  'requestId'?: (string);
  'apiKey'?: (string);
  'usage'?: (_warden_v1_Usage | null);
  'costMicros'?: (number | string | Long);
  'model'?: (string);
  'provider'?: (string);
  'outcome'?: (_warden_v1_Outcome);
  'latency'?: (_google_protobuf_Duration | null);
  'reservationId'?: (string);
  'subject'?: (_warden_v1_Subject | null);
  '_costMicros'?: "costMicros";
}

export interface RecordUsageRequest__Output {
  'requestId': (string);
  'apiKey': (string);
  'usage': (_warden_v1_Usage__Output | null);
  'costMicros'?: (number);
  'model': (string);
  'provider': (string);
  'outcome': (_warden_v1_Outcome__Output);
  'latency': (_google_protobuf_Duration__Output | null);
  'reservationId': (string);
  'subject': (_warden_v1_Subject__Output | null);
  '_costMicros'?: "costMicros";
}
