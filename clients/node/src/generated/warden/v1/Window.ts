// Original file: proto/warden/v1/types.proto

export const Window = {
  WINDOW_UNSPECIFIED: 'WINDOW_UNSPECIFIED',
  WINDOW_MINUTE: 'WINDOW_MINUTE',
  WINDOW_HOUR: 'WINDOW_HOUR',
  WINDOW_DAY: 'WINDOW_DAY',
} as const;

export type Window =
  | 'WINDOW_UNSPECIFIED'
  | 0
  | 'WINDOW_MINUTE'
  | 1
  | 'WINDOW_HOUR'
  | 2
  | 'WINDOW_DAY'
  | 3

export type Window__Output = typeof Window[keyof typeof Window]
