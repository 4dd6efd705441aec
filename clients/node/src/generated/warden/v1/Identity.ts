// Original file: proto/warden/v1/warden.proto


export interface Identity {
  'orgId'?: (string);
  'appId'?: (string);
  'userId'?: (string);
  'apiKeyId'?: (string);
}

export interface Identity__Output {
  'orgId': (string);
  'appId': (string);
  'userId': (string);
  'apiKeyId': (string);
}
