// Original file: proto/warden/v1/warden.proto


export interface Redaction {
  'messageIndex'?: (number);
  'start'?: (number);
  'end'?: (number);
  'kind'?: (string);
  'replacement'?: (string);
}

export interface Redaction__Output {
  'messageIndex': (number);
  'start': (number);
  'end': (number);
  'kind': (string);
  'replacement': (string);
}
