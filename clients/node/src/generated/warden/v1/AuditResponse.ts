// Original file: proto/warden/v1/warden.proto


export interface AuditResponse {
  'accepted'?: (number);
  'eventIds'?: (string)[];
}

export interface AuditResponse__Output {
  'accepted': (number);
  'eventIds': (string)[];
}
