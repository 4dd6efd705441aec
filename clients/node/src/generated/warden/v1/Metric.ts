// Original file: proto/warden/v1/types.proto

export const Metric = {
  METRIC_UNSPECIFIED: 'METRIC_UNSPECIFIED',
  METRIC_REQUESTS: 'METRIC_REQUESTS',
  METRIC_INPUT_TOKENS: 'METRIC_INPUT_TOKENS',
  METRIC_OUTPUT_TOKENS: 'METRIC_OUTPUT_TOKENS',
  METRIC_TOTAL_TOKENS: 'METRIC_TOTAL_TOKENS',
  METRIC_COST_MICROS: 'METRIC_COST_MICROS',
} as const;

export type Metric =
  | 'METRIC_UNSPECIFIED'
  | 0
  | 'METRIC_REQUESTS'
  | 1
  | 'METRIC_INPUT_TOKENS'
  | 2
  | 'METRIC_OUTPUT_TOKENS'
  | 3
  | 'METRIC_TOTAL_TOKENS'
  | 4
  | 'METRIC_COST_MICROS'
  | 5

export type Metric__Output = typeof Metric[keyof typeof Metric]
