// Original file: proto/warden/v1/types.proto

export const GuardrailAction = {
  GUARDRAIL_ACTION_UNSPECIFIED: 'GUARDRAIL_ACTION_UNSPECIFIED',
  GUARDRAIL_ACTION_LOG: 'GUARDRAIL_ACTION_LOG',
  GUARDRAIL_ACTION_REDACT: 'GUARDRAIL_ACTION_REDACT',
  GUARDRAIL_ACTION_BLOCK: 'GUARDRAIL_ACTION_BLOCK',
} as const;

export type GuardrailAction =
  | 'GUARDRAIL_ACTION_UNSPECIFIED'
  | 0
  | 'GUARDRAIL_ACTION_LOG'
  | 1
  | 'GUARDRAIL_ACTION_REDACT'
  | 2
  | 'GUARDRAIL_ACTION_BLOCK'
  | 3

export type GuardrailAction__Output = typeof GuardrailAction[keyof typeof GuardrailAction]
