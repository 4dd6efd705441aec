// Original file: proto/warden/v1/types.proto

import type { GuardrailAction as _warden_v1_GuardrailAction, GuardrailAction__Output as _warden_v1_GuardrailAction__Output } from '../../warden/v1/GuardrailAction';

export interface PiiPattern {
  'name'?: (string);
  'pattern'?: (string);
  'action'?: (_warden_v1_GuardrailAction);
}

export interface PiiPattern__Output {
  'name': (string);
  'pattern': (string);
  'action': (_warden_v1_GuardrailAction__Output);
}
