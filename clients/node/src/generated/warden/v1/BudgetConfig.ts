// Original file: proto/warden/v1/types.proto

import type { Period as _warden_v1_Period, Period__Output as _warden_v1_Period__Output } from '../../warden/v1/Period';
import type { Selector as _warden_v1_Selector, Selector__Output as _warden_v1_Selector__Output } from '../../warden/v1/Selector';
import type { Long } from '@grpc/proto-loader';

export interface BudgetConfig {
  'period'?: (_warden_v1_Period);
  'limitMicros'?: (number | string | Long);
  'maxRequestCostMicros'?: (number | string | Long);
  'alertThresholdPercent'?: (number);
  'selector'?: (_warden_v1_Selector | null);
  'defaultInputMicrosPerMillion'?: (number | string | Long);
  'defaultOutputMicrosPerMillion'?: (number | string | Long);
}

export interface BudgetConfig__Output {
  'period': (_warden_v1_Period__Output);
  'limitMicros': (number);
  'maxRequestCostMicros': (number);
  'alertThresholdPercent': (number);
  'selector': (_warden_v1_Selector__Output | null);
  'defaultInputMicrosPerMillion': (number);
  'defaultOutputMicrosPerMillion': (number);
}
