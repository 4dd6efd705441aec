// Original file: proto/warden/v1/warden.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { AuditRequest as _warden_v1_AuditRequest, AuditRequest__Output as _warden_v1_AuditRequest__Output } from '../../warden/v1/AuditRequest';
import type { AuditResponse as _warden_v1_AuditResponse, AuditResponse__Output as _warden_v1_AuditResponse__Output } from '../../warden/v1/AuditResponse';
import type { AuthorizeRequest as _warden_v1_AuthorizeRequest, AuthorizeRequest__Output as _warden_v1_AuthorizeRequest__Output } from '../../warden/v1/AuthorizeRequest';
import type { AuthorizeResponse as _warden_v1_AuthorizeResponse, AuthorizeResponse__Output as _warden_v1_AuthorizeResponse__Output } from '../../warden/v1/AuthorizeResponse';
import type { RecordUsageRequest as _warden_v1_RecordUsageRequest, RecordUsageRequest__Output as _warden_v1_RecordUsageRequest__Output } from '../../warden/v1/RecordUsageRequest';
import type { RecordUsageResponse as _warden_v1_RecordUsageResponse, RecordUsageResponse__Output as _warden_v1_RecordUsageResponse__Output } from '../../warden/v1/RecordUsageResponse';
import type { StreamAuditRequest as _warden_v1_StreamAuditRequest, StreamAuditRequest__Output as _warden_v1_StreamAuditRequest__Output } from '../../warden/v1/StreamAuditRequest';
import type { StreamAuditResponse as _warden_v1_StreamAuditResponse, StreamAuditResponse__Output as _warden_v1_StreamAuditResponse__Output } from '../../warden/v1/StreamAuditResponse';

export interface WardenClient extends grpc.Client {
  Audit(argument: _warden_v1_AuditRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  Audit(argument: _warden_v1_AuditRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  Audit(argument: _warden_v1_AuditRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  Audit(argument: _warden_v1_AuditRequest, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  audit(argument: _warden_v1_AuditRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  audit(argument: _warden_v1_AuditRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  audit(argument: _warden_v1_AuditRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  audit(argument: _warden_v1_AuditRequest, callback: grpc.requestCallback<_warden_v1_AuditResponse__Output>): grpc.ClientUnaryCall;
  
  Authorize(argument: _warden_v1_AuthorizeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  Authorize(argument: _warden_v1_AuthorizeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  Authorize(argument: _warden_v1_AuthorizeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  Authorize(argument: _warden_v1_AuthorizeRequest, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  authorize(argument: _warden_v1_AuthorizeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  authorize(argument: _warden_v1_AuthorizeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  authorize(argument: _warden_v1_AuthorizeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  authorize(argument: _warden_v1_AuthorizeRequest, callback: grpc.requestCallback<_warden_v1_AuthorizeResponse__Output>): grpc.ClientUnaryCall;
  
  RecordUsage(argument: _warden_v1_RecordUsageRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  RecordUsage(argument: _warden_v1_RecordUsageRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  RecordUsage(argument: _warden_v1_RecordUsageRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  RecordUsage(argument: _warden_v1_RecordUsageRequest, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  recordUsage(argument: _warden_v1_RecordUsageRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  recordUsage(argument: _warden_v1_RecordUsageRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  recordUsage(argument: _warden_v1_RecordUsageRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  recordUsage(argument: _warden_v1_RecordUsageRequest, callback: grpc.requestCallback<_warden_v1_RecordUsageResponse__Output>): grpc.ClientUnaryCall;
  
  StreamAudit(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  StreamAudit(metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  StreamAudit(options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  StreamAudit(callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  streamAudit(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  streamAudit(metadata: grpc.Metadata, callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  streamAudit(options: grpc.CallOptions, callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  streamAudit(callback: grpc.requestCallback<_warden_v1_StreamAuditResponse__Output>): grpc.ClientWritableStream<_warden_v1_StreamAuditRequest>;
  
}

export interface WardenHandlers extends grpc.UntypedServiceImplementation {
  Audit: grpc.handleUnaryCall<_warden_v1_AuditRequest__Output, _warden_v1_AuditResponse>;
  
  Authorize: grpc.handleUnaryCall<_warden_v1_AuthorizeRequest__Output, _warden_v1_AuthorizeResponse>;
  
  RecordUsage: grpc.handleUnaryCall<_warden_v1_RecordUsageRequest__Output, _warden_v1_RecordUsageResponse>;
  
  StreamAudit: grpc.handleClientStreamingCall<_warden_v1_StreamAuditRequest__Output, _warden_v1_StreamAuditResponse>;
  
}

export interface WardenDefinition extends grpc.ServiceDefinition {
  Audit: MethodDefinition<_warden_v1_AuditRequest, _warden_v1_AuditResponse, _warden_v1_AuditRequest__Output, _warden_v1_AuditResponse__Output>
  Authorize: MethodDefinition<_warden_v1_AuthorizeRequest, _warden_v1_AuthorizeResponse, _warden_v1_AuthorizeRequest__Output, _warden_v1_AuthorizeResponse__Output>
  RecordUsage: MethodDefinition<_warden_v1_RecordUsageRequest, _warden_v1_RecordUsageResponse, _warden_v1_RecordUsageRequest__Output, _warden_v1_RecordUsageResponse__Output>
  StreamAudit: MethodDefinition<_warden_v1_StreamAuditRequest, _warden_v1_StreamAuditResponse, _warden_v1_StreamAuditRequest__Output, _warden_v1_StreamAuditResponse__Output>
}
