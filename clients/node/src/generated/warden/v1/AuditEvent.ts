// Original file: proto/warden/v1/warden.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp';
import type { Struct as _google_protobuf_Struct, Struct__Output as _google_protobuf_Struct__Output } from '../../google/protobuf/Struct';

export interface AuditEvent {
  'eventId'?: (string);
  'time'?: (_google_protobuf_Timestamp | null);
  'action'?: (string);
  'requestId'?: (string);
  'userId'?: (string);
  'model'?: (string);
  'provider'?: (string);
  'attributes'?: (_google_protobuf_Struct | null);
}

export interface AuditEvent__Output {
  'eventId': (string);
  'time': (_google_protobuf_Timestamp__Output | null);
  'action': (string);
  'requestId': (string);
  'userId': (string);
  'model': (string);
  'provider': (string);
  'attributes': (_google_protobuf_Struct__Output | null);
}
