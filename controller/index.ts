// The controller's public surface: what the CLI, benchmarks and tests use.
export { Controller, jsonLog, stateFromSnapshot, type ControllerOptions } from './controller.js';
export { startApi, route, type ApiServer, type ApiView } from './api.js';
export { connectNats, ensureResultsStream, resetConsumer, Ingest, STREAM, CONSUMER, type IngestOptions, type Log } from './ingest.js';
export { PostgresStore, type PostgresStoreOptions } from './store-postgres.js';
export { KvStore, KV_BUCKET, type KvStoreOptions } from './store-kv.js';
export type { Commit, Snapshot, StateStore } from './store.js';
