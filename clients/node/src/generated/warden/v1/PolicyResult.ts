// Original file: proto/warden/v1/warden.proto

import type { Scope as _warden_v1_Scope, Scope__Output as _warden_v1_Scope__Output } from '../../warden/v1/Scope';
import type { PolicyMode as _warden_v1_PolicyMode, PolicyMode__Output as _warden_v1_PolicyMode__Output } from '../../warden/v1/PolicyMode';
import type { Reason as _warden_v1_Reason, Reason__Output as _warden_v1_Reason__Output } from '../../warden/v1/Reason';

export interface PolicyResult {
  'policyId'?: (string);
  'scope'?: (_warden_v1_Scope | null);
  'policyType'?: (string);
  'mode'?: (_warden_v1_PolicyMode);
  'allowed'?: (boolean);
  'reason'?: (_warden_v1_Reason);
  'message'?: (string);
}

export interface PolicyResult__Output {
  'policyId': (string);
  'scope': (_warden_v1_Scope__Output | null);
  'policyType': (string);
  'mode': (_warden_v1_PolicyMode__Output);
  'allowed': (boolean);
  'reason': (_warden_v1_Reason__Output);
  'message': (string);
}
