// Original file: proto/warden/v1/types.proto

import type { Long } from '@grpc/proto-loader';

export interface Usage {
  'inputTokens'?: (number | string | Long);
  'outputTokens'?: (number | string | Long);
  'cachedInputTokens'?: (number | string | Long);
}

export interface Usage__Output {
  'inputTokens': (number);
  'outputTokens': (number);
  'cachedInputTokens': (number);
}
