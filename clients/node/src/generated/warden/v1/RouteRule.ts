// Original file: proto/warden/v1/types.proto

import type { RouteTarget as _warden_v1_RouteTarget, RouteTarget__Output as _warden_v1_RouteTarget__Output } from '../../warden/v1/RouteTarget';

export interface RouteRule {
  'alias'?: (string);
  'targets'?: (_warden_v1_RouteTarget)[];
}

export interface RouteRule__Output {
  'alias': (string);
  'targets': (_warden_v1_RouteTarget__Output)[];
}
