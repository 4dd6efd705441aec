import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { WardenClient as _warden_v1_WardenClient, WardenDefinition as _warden_v1_WardenDefinition } from './warden/v1/Warden';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  google: {
    protobuf: {
      Duration: MessageTypeDefinition
      ListValue: MessageTypeDefinition
      NullValue: EnumTypeDefinition
      Struct: MessageTypeDefinition
      Timestamp: MessageTypeDefinition
      Value: MessageTypeDefinition
    }
  }
  warden: {
    v1: {
      AuditConfig: MessageTypeDefinition
      AuditEvent: MessageTypeDefinition
      AuditRequest: MessageTypeDefinition
      AuditResponse: MessageTypeDefinition
      AuthorizeRequest: MessageTypeDefinition
      AuthorizeResponse: MessageTypeDefinition
      BudgetConfig: MessageTypeDefinition
      ChatMessage: MessageTypeDefinition
      Decision: EnumTypeDefinition
      FailureMode: EnumTypeDefinition
      GuardrailAction: EnumTypeDefinition
      Identity: MessageTypeDefinition
      LimitStatus: MessageTypeDefinition
      Metric: EnumTypeDefinition
      ModelAccessConfig: MessageTypeDefinition
      Outcome: EnumTypeDefinition
      Period: EnumTypeDefinition
      PiiConfig: MessageTypeDefinition
      PiiPattern: MessageTypeDefinition
      Policy: MessageTypeDefinition
      PolicyMode: EnumTypeDefinition
      PolicyResult: MessageTypeDefinition
      PromptInjectionConfig: MessageTypeDefinition
      RagSourcesConfig: MessageTypeDefinition
      RateLimitConfig: MessageTypeDefinition
      Reason: EnumTypeDefinition
      RecordUsageRequest: MessageTypeDefinition
      RecordUsageResponse: MessageTypeDefinition
      Redaction: MessageTypeDefinition
      Route: MessageTypeDefinition
      RouteRule: MessageTypeDefinition
      RouteTarget: MessageTypeDefinition
      RoutingConfig: MessageTypeDefinition
      Scope: MessageTypeDefinition
      ScopeKind: EnumTypeDefinition
      Selector: MessageTypeDefinition
      StreamAuditRequest: MessageTypeDefinition
      StreamAuditResponse: MessageTypeDefinition
      Subject: MessageTypeDefinition
      Usage: MessageTypeDefinition
      Warden: SubtypeConstructor<typeof grpc.Client, _warden_v1_WardenClient> & { service: _warden_v1_WardenDefinition }
      Window: EnumTypeDefinition
    }
  }
}

