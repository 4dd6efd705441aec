// Original file: proto/warden/v1/types.proto

import type { RouteRule as _warden_v1_RouteRule, RouteRule__Output as _warden_v1_RouteRule__Output } from '../../warden/v1/RouteRule';
import type { Long } from '@grpc/proto-loader';

export interface RoutingConfig {
  'rules'?: (_warden_v1_RouteRule)[];
  'maxTokensCap'?: (number | string | Long);
}

export interface RoutingConfig__Output {
  'rules': (_warden_v1_RouteRule__Output)[];
  'maxTokensCap': (number);
}
