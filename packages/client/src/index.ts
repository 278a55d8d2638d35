/**
 * @rendezvous/client: the SDK (docs/client.md). Isomorphic: this entry point imports nothing
 * Node-only; the file profile store and the `ws` WebSocket are in `@rendezvous/client/node`.
 */
export { RendezvousClient, encodeSnapshot, decodeSnapshot } from './client.ts';
export type { ClientOptions, TopicMessage, TopicView, SyncReport, SendResult, ChangeResult } from './client.ts';
export {
  ServerApi,
  isPending,
  type Pending,
  type ForkReport,
  type ServerKeys,
  type PushKind,
  type PushSubscriptionInfo,
  type PushSubscriptionInput,
} from './api.ts';
export { TopicMirror, type Alarm, type HostKeyLookup, type IdentityPins, type MirrorEntry, type MirrorSnapshot } from './topic-mirror.ts';
export { Contacts, safetyNumber, type Contact } from './contacts.ts';
export {
  MemoryProfileStore,
  encryptedProfileStore,
  isEncryptedProfile,
  openProfileStore,
  plaintextProfileStore,
  reencryptProfile,
  type ProfileStore,
} from './profile-store.ts';
export { Secret, REDACTED } from './secret.ts';
export {
  sendFile,
  fetchFile,
  fileInfo,
  type FileSource,
  type FileSink,
  type FileProgress,
  type FileSummary,
  type FileEntry,
  type SendFileOptions,
  type FetchFileOptions,
  type SentFile,
  type FetchedFile,
} from './files.ts';
export { LINK_TTL_MS, decodeLinkCode, type LinkCode } from './link.ts';
