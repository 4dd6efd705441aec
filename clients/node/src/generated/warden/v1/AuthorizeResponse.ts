// Original file: proto/warden/v1/warden.proto

import type { Decision as _warden_v1_Decision, Decision__Output as _warden_v1_Decision__Output } from '../../warden/v1/Decision';
import type { Reason as _warden_v1_Reason, Reason__Output as _warden_v1_Reason__Output } from '../../warden/v1/Reason';
import type { PolicyResult as _warden_v1_PolicyResult, PolicyResult__Output as _warden_v1_PolicyResult__Output } from '../../warden/v1/PolicyResult';
import type { LimitStatus as _warden_v1_LimitStatus, LimitStatus__Output as _warden_v1_LimitStatus__Output } from '../../warden/v1/LimitStatus';
import type { Route as _warden_v1_Route, Route__Output as _warden_v1_Route__Output } from '../../warden/v1/Route';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../google/protobuf/Duration';
import type { Identity as _warden_v1_Identity, Identity__Output as _warden_v1_Identity__Output } from '../../warden/v1/Identity';
import type { Redaction as _warden_v1_Redaction, Redaction__Output as _warden_v1_Redaction__Output } from '../../warden/v1/Redaction';
import type { ChatMessage as _warden_v1_ChatMessage, ChatMessage__Output as _warden_v1_ChatMessage__Output } from '../../warden/v1/ChatMessage';

export interface AuthorizeResponse {
  'decision'?: (_warden_v1_Decision);
  'reason'?: (_warden_v1_Reason);
  'results'?: (_warden_v1_PolicyResult)[];
  'limits'?: (_warden_v1_LimitStatus)[];
  'route'?: (_warden_v1_Route | null);
  'retryAfter'?: (_google_protobuf_Duration | null);
  'reservationId'?: (string);
  'identity'?: (_warden_v1_Identity | null);
  'redactions'?: (_warden_v1_Redaction)[];
  'redactedMessages'?: (_warden_v1_ChatMessage)[];
}

export interface AuthorizeResponse__Output {
  'decision': (_warden_v1_Decision__Output);
  'reason': (_warden_v1_Reason__Output);
  'results': (_warden_v1_PolicyResult__Output)[];
  'limits': (_warden_v1_LimitStatus__Output)[];
  'route': (_warden_v1_Route__Output | null);
  'retryAfter': (_google_protobuf_Duration__Output | null);
  'reservationId': (string);
  'identity': (_warden_v1_Identity__Output | null);
  'redactions': (_warden_v1_Redaction__Output)[];
  'redactedMessages': (_warden_v1_ChatMessage__Output)[];
}
