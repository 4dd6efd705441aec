// Original file: proto/warden/v1/types.proto

import type { Metric as _warden_v1_Metric, Metric__Output as _warden_v1_Metric__Output } from '../../warden/v1/Metric';
import type { Window as _warden_v1_Window, Window__Output as _warden_v1_Window__Output } from '../../warden/v1/Window';
import type { Selector as _warden_v1_Selector, Selector__Output as _warden_v1_Selector__Output } from '../../warden/v1/Selector';
import type { Long } from '@grpc/proto-loader';

export interface RateLimitConfig {
  'metric'?: (_warden_v1_Metric);
  'window'?: (_warden_v1_Window);
  'limit'?: (number | string | Long);
  'selector'?: (_warden_v1_Selector | null);
}

export interface RateLimitConfig__Output {
  'metric': (_warden_v1_Metric__Output);
  'window': (_warden_v1_Window__Output);
  'limit': (number);
  'selector': (_warden_v1_Selector__Output | null);
}
