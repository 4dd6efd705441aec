// Original file: proto/warden/v1/types.proto

import type { GuardrailAction as _warden_v1_GuardrailAction, GuardrailAction__Output as _warden_v1_GuardrailAction__Output } from '../../warden/v1/GuardrailAction';
import type { PiiPattern as _warden_v1_PiiPattern, PiiPattern__Output as _warden_v1_PiiPattern__Output } from '../../warden/v1/PiiPattern';

export interface PiiConfig {
  'action'?: (_warden_v1_GuardrailAction);
  'entities'?: (string)[];
  'entityActions'?: ({[key: string]: _warden_v1_GuardrailAction});
  'patterns'?: (_warden_v1_PiiPattern)[];
}

export interface PiiConfig__Output {
  'action': (_warden_v1_GuardrailAction__Output);
  'entities': (string)[];
  'entityActions': ({[key: string]: _warden_v1_GuardrailAction__Output});
  'patterns': (_warden_v1_PiiPattern__Output)[];
}
