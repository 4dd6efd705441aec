// Original file: proto/warden/v1/types.proto

export const FailureMode = {
  FAILURE_MODE_UNSPECIFIED: 'FAILURE_MODE_UNSPECIFIED',
  FAILURE_MODE_FAIL_CLOSED: 'FAILURE_MODE_FAIL_CLOSED',
  FAILURE_MODE_FAIL_OPEN: 'FAILURE_MODE_FAIL_OPEN',
} as const;

export type FailureMode =
  | 'FAILURE_MODE_UNSPECIFIED'
  | 0
  | 'FAILURE_MODE_FAIL_CLOSED'
  | 1
  | 'FAILURE_MODE_FAIL_OPEN'
  | 2

export type FailureMode__Output = typeof FailureMode[keyof typeof FailureMode]
