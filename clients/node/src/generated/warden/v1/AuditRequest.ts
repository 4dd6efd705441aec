// Original file: proto/warden/v1/warden.proto

import type { AuditEvent as _warden_v1_AuditEvent, AuditEvent__Output as _warden_v1_AuditEvent__Output } from '../../warden/v1/AuditEvent';
import type { Subject as _warden_v1_Subject, Subject__Output as _warden_v1_Subject__Output } from '../../warden/v1/Subject';

export interface AuditRequest {
  'apiKey'?: (string);
  'events'?: (_warden_v1_AuditEvent)[];
  'subject'?: (_warden_v1_Subject | null);
}

export interface AuditRequest__Output {
  'apiKey': (string);
  'events': (_warden_v1_AuditEvent__Output)[];
  'subject': (_warden_v1_Subject__Output | null);
}
