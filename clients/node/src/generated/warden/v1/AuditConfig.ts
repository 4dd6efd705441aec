// Original file: proto/warden/v1/types.proto


export interface AuditConfig {
  'allowSampleRate'?: (number | string);
  'denySampleRate'?: (number | string);
  'storePrompts'?: (boolean);
  'maskFields'?: (string)[];
  'hashFields'?: (string)[];
  '_allowSampleRate'?: "allowSampleRate";
  '_denySampleRate'?: "denySampleRate";
}

export interface AuditConfig__Output {
  'allowSampleRate'?: (number);
  'denySampleRate'?: (number);
  'storePrompts': (boolean);
  'maskFields': (string)[];
  'hashFields': (string)[];
  '_allowSampleRate'?: "allowSampleRate";
  '_denySampleRate'?: "denySampleRate";
}
