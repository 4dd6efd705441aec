// Original file: proto/warden/v1/types.proto

import type { GuardrailAction as _warden_v1_GuardrailAction, GuardrailAction__Output as _warden_v1_GuardrailAction__Output } from '../../warden/v1/GuardrailAction';

export interface RagSourcesConfig {
  'action'?: (_warden_v1_GuardrailAction);
  'allowedSources'?: (string)[];
  'deniedSources'?: (string)[];
}

export interface RagSourcesConfig__Output {
  'action': (_warden_v1_GuardrailAction__Output);
  'allowedSources': (string)[];
  'deniedSources': (string)[];
}
