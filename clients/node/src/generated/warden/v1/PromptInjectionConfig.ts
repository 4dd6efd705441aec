// Original file: proto/warden/v1/types.proto

import type { GuardrailAction as _warden_v1_GuardrailAction, GuardrailAction__Output as _warden_v1_GuardrailAction__Output } from '../../warden/v1/GuardrailAction';

export interface PromptInjectionConfig {
  'action'?: (_warden_v1_GuardrailAction);
  'threshold'?: (number | string);
  'roles'?: (string)[];
}

export interface PromptInjectionConfig__Output {
  'action': (_warden_v1_GuardrailAction__Output);
  'threshold': (number);
  'roles': (string)[];
}
