// Original file: proto/warden/v1/types.proto

import type { ScopeKind as _warden_v1_ScopeKind, ScopeKind__Output as _warden_v1_ScopeKind__Output } from '../../warden/v1/ScopeKind';

export interface Scope {
  'kind'?: (_warden_v1_ScopeKind);
  'id'?: (string);
}

export interface Scope__Output {
  'kind': (_warden_v1_ScopeKind__Output);
  'id': (string);
}
