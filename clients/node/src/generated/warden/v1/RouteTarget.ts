// Original file: proto/warden/v1/types.proto


export interface RouteTarget {
  'provider'?: (string);
  'model'?: (string);
}

export interface RouteTarget__Output {
  'provider': (string);
  'model': (string);
}
