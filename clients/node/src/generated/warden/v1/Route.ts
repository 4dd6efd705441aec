// Original file: proto/warden/v1/warden.proto

import type { RouteTarget as _warden_v1_RouteTarget, RouteTarget__Output as _warden_v1_RouteTarget__Output } from '../../warden/v1/RouteTarget';
import type { Long } from '@grpc/proto-loader';

export interface Route {
  'provider'?: (string);
  'model'?: (string);
  'maxOutputTokens'?: (number | string | Long);
  'fallbacks'?: (_warden_v1_RouteTarget)[];
}

export interface Route__Output {
  'provider': (string);
  'model': (string);
  'maxOutputTokens': (number);
  'fallbacks': (_warden_v1_RouteTarget__Output)[];
}
