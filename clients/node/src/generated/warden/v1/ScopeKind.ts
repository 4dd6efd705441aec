// Original file: proto/warden/v1/types.proto

export const ScopeKind = {
  SCOPE_KIND_UNSPECIFIED: 'SCOPE_KIND_UNSPECIFIED',
  SCOPE_KIND_ORG: 'SCOPE_KIND_ORG',
  SCOPE_KIND_TEAM: 'SCOPE_KIND_TEAM',
  SCOPE_KIND_APP: 'SCOPE_KIND_APP',
  SCOPE_KIND_USER: 'SCOPE_KIND_USER',
  SCOPE_KIND_API_KEY: 'SCOPE_KIND_API_KEY',
} as const;

export type ScopeKind =
  | 'SCOPE_KIND_UNSPECIFIED'
  | 0
  | 'SCOPE_KIND_ORG'
  | 1
  | 'SCOPE_KIND_TEAM'
  | 2
  | 'SCOPE_KIND_APP'
  | 3
  | 'SCOPE_KIND_USER'
  | 4
  | 'SCOPE_KIND_API_KEY'
  | 5

export type ScopeKind__Output = typeof ScopeKind[keyof typeof ScopeKind]
