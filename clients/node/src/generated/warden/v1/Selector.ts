// Original file: proto/warden/v1/types.proto


export interface Selector {
  'models'?: (string)[];
  'providers'?: (string)[];
}

export interface Selector__Output {
  'models': (string)[];
  'providers': (string)[];
}
