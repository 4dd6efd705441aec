// Original file: proto/warden/v1/types.proto

export const PolicyMode = {
  POLICY_MODE_UNSPECIFIED: 'POLICY_MODE_UNSPECIFIED',
  POLICY_MODE_ENFORCE: 'POLICY_MODE_ENFORCE',
  POLICY_MODE_DRY_RUN: 'POLICY_MODE_DRY_RUN',
} as const;

export type PolicyMode =
  | 'POLICY_MODE_UNSPECIFIED'
  | 0
  | 'POLICY_MODE_ENFORCE'
  | 1
  | 'POLICY_MODE_DRY_RUN'
  | 2

export type PolicyMode__Output = typeof PolicyMode[keyof typeof PolicyMode]
