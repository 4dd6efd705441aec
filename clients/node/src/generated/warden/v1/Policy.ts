// Original file: proto/warden/v1/types.proto

import type { Scope as _warden_v1_Scope, Scope__Output as _warden_v1_Scope__Output } from '../../warden/v1/Scope';
import type { PolicyMode as _warden_v1_PolicyMode, PolicyMode__Output as _warden_v1_PolicyMode__Output } from '../../warden/v1/PolicyMode';
import type { FailureMode as _warden_v1_FailureMode, FailureMode__Output as _warden_v1_FailureMode__Output } from '../../warden/v1/FailureMode';
import type { RateLimitConfig as _warden_v1_RateLimitConfig, RateLimitConfig__Output as _warden_v1_RateLimitConfig__Output } from '../../warden/v1/RateLimitConfig';
import type { BudgetConfig as _warden_v1_BudgetConfig, BudgetConfig__Output as _warden_v1_BudgetConfig__Output } from '../../warden/v1/BudgetConfig';
import type { ModelAccessConfig as _warden_v1_ModelAccessConfig, ModelAccessConfig__Output as _warden_v1_ModelAccessConfig__Output } from '../../warden/v1/ModelAccessConfig';
import type { RoutingConfig as _warden_v1_RoutingConfig, RoutingConfig__Output as _warden_v1_RoutingConfig__Output } from '../../warden/v1/RoutingConfig';
import type { PiiConfig as _warden_v1_PiiConfig, PiiConfig__Output as _warden_v1_PiiConfig__Output } from '../../warden/v1/PiiConfig';
import type { PromptInjectionConfig as _warden_v1_PromptInjectionConfig, PromptInjectionConfig__Output as _warden_v1_PromptInjectionConfig__Output } from '../../warden/v1/PromptInjectionConfig';
import type { RagSourcesConfig as _warden_v1_RagSourcesConfig, RagSourcesConfig__Output as _warden_v1_RagSourcesConfig__Output } from '../../warden/v1/RagSourcesConfig';
import type { AuditConfig as _warden_v1_AuditConfig, AuditConfig__Output as _warden_v1_AuditConfig__Output } from '../../warden/v1/AuditConfig';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp';
import type { Long } from '@grpc/proto-loader';

export interface Policy {
  'id'?: (string);
  'scope'?: (_warden_v1_Scope | null);
  'name'?: (string);
  'mode'?: (_warden_v1_PolicyMode);
  'priority'?: (number);
  'locked'?: (boolean);
  'failureMode'?: (_warden_v1_FailureMode);
  'rateLimit'?: (_warden_v1_RateLimitConfig | null);
  'budget'?: (_warden_v1_BudgetConfig | null);
  'modelAccess'?: (_warden_v1_ModelAccessConfig | null);
  'routing'?: (_warden_v1_RoutingConfig | null);
  'pii'?: (_warden_v1_PiiConfig | null);
  'promptInjection'?: (_warden_v1_PromptInjectionConfig | null);
  'ragSources'?: (_warden_v1_RagSourcesConfig | null);
  'audit'?: (_warden_v1_AuditConfig | null);
  'createTime'?: (_google_protobuf_Timestamp | null);
  'updateTime'?: (_google_protobuf_Timestamp | null);
  'revision'?: (number | string | Long);
  'config'?: "rateLimit"|"budget"|"modelAccess"|"routing"|"pii"|"promptInjection"|"ragSources"|"audit";
}

export interface Policy__Output {
  'id': (string);
  'scope': (_warden_v1_Scope__Output | null);
  'name': (string);
  'mode': (_warden_v1_PolicyMode__Output);
  'priority': (number);
  'locked': (boolean);
  'failureMode': (_warden_v1_FailureMode__Output);
  'rateLimit'?: (_warden_v1_RateLimitConfig__Output | null);
  'budget'?: (_warden_v1_BudgetConfig__Output | null);
  'modelAccess'?: (_warden_v1_ModelAccessConfig__Output | null);
  'routing'?: (_warden_v1_RoutingConfig__Output | null);
  'pii'?: (_warden_v1_PiiConfig__Output | null);
  'promptInjection'?: (_warden_v1_PromptInjectionConfig__Output | null);
  'ragSources'?: (_warden_v1_RagSourcesConfig__Output | null);
  'audit'?: (_warden_v1_AuditConfig__Output | null);
  'createTime': (_google_protobuf_Timestamp__Output | null);
  'updateTime': (_google_protobuf_Timestamp__Output | null);
  'revision': (number);
  'config'?: "rateLimit"|"budget"|"modelAccess"|"routing"|"pii"|"promptInjection"|"ragSources"|"audit";
}
