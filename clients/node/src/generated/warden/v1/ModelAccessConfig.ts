// Original file: proto/warden/v1/types.proto


export interface ModelAccessConfig {
  'allowModels'?: (string)[];
  'denyModels'?: (string)[];
  'allowProviders'?: (string)[];
  'denyProviders'?: (string)[];
  'aliases'?: ({[key: string]: string});
}

export interface ModelAccessConfig__Output {
  'allowModels': (string)[];
  'denyModels': (string)[];
  'allowProviders': (string)[];
  'denyProviders': (string)[];
  'aliases': ({[key: string]: string});
}
