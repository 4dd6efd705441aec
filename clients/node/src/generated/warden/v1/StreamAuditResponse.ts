// Original file: proto/warden/v1/warden.proto


export interface StreamAuditResponse {
  'accepted'?: (number);
}

export interface StreamAuditResponse__Output {
  'accepted': (number);
}
