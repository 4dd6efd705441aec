// Original file: proto/warden/v1/warden.proto

import type { Long } from '@grpc/proto-loader';

export interface RecordUsageResponse {
  'costMicros'?: (number | string | Long);
  'duplicate'?: (boolean);
  'costUnknown'?: (boolean);
}

export interface RecordUsageResponse__Output {
  'costMicros': (number);
  'duplicate': (boolean);
  'costUnknown': (boolean);
}
