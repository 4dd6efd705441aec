// Original file: proto/warden/v1/types.proto

export const Period = {
  PERIOD_UNSPECIFIED: 'PERIOD_UNSPECIFIED',
  PERIOD_DAY: 'PERIOD_DAY',
  PERIOD_MONTH: 'PERIOD_MONTH',
} as const;

export type Period =
  | 'PERIOD_UNSPECIFIED'
  | 0
  | 'PERIOD_DAY'
  | 1
  | 'PERIOD_MONTH'
  | 2

export type Period__Output = typeof Period[keyof typeof Period]
