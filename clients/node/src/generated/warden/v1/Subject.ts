// Original file: proto/warden/v1/warden.proto


export interface Subject {
  'orgId'?: (string);
  'appId'?: (string);
  'userId'?: (string);
}

export interface Subject__Output {
  'orgId': (string);
  'appId': (string);
  'userId': (string);
}
