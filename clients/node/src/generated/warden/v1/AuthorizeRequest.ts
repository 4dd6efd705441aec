// Original file: proto/warden/v1/warden.proto

import type { ChatMessage as _warden_v1_ChatMessage, ChatMessage__Output as _warden_v1_ChatMessage__Output } from '../../warden/v1/ChatMessage';
import type { Subject as _warden_v1_Subject, Subject__Output as _warden_v1_Subject__Output } from '../../warden/v1/Subject';
import type { Long } from '@grpc/proto-loader';

export interface AuthorizeRequest {
  'requestId'?: (string);
  'apiKey'?: (string);
  'model'?: (string);
  'provider'?: (string);
  'inputTokens'?: (number | string | Long);
  'maxOutputTokens'?: (number | string | Long);
  'messages'?: (_warden_v1_ChatMessage)[];
  'userId'?: (string);
  'subject'?: (_warden_v1_Subject | null);
  'labels'?: ({[key: string]: string});
  'ragSources'?: (string)[];
  'minOutputTokens'?: (number | string | Long);
}

export interface AuthorizeRequest__Output {
  'requestId': (string);
  'apiKey': (string);
  'model': (string);
  'provider': (string);
  'inputTokens': (number);
  'maxOutputTokens': (number);
  'messages': (_warden_v1_ChatMessage__Output)[];
  'userId': (string);
  'subject': (_warden_v1_Subject__Output | null);
  'labels': ({[key: string]: string});
  'ragSources': (string)[];
  'minOutputTokens': (number);
}
