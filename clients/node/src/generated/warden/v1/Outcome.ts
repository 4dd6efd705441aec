// Original file: proto/warden/v1/warden.proto

export const Outcome = {
  OUTCOME_UNSPECIFIED: 'OUTCOME_UNSPECIFIED',
  OUTCOME_COMPLETED: 'OUTCOME_COMPLETED',
  OUTCOME_FAILED: 'OUTCOME_FAILED',
  OUTCOME_CANCELLED: 'OUTCOME_CANCELLED',
} as const;

export type Outcome =
  | 'OUTCOME_UNSPECIFIED'
  | 0
  | 'OUTCOME_COMPLETED'
  | 1
  | 'OUTCOME_FAILED'
  | 2
  | 'OUTCOME_CANCELLED'
  | 3

export type Outcome__Output = typeof Outcome[keyof typeof Outcome]
