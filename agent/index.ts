// The agent folder's public face: the probe engine, the long-running agent and its outbox.
export { runFrom, type RunOptions, type RunResult, type ProbeLoader } from './engine.js';
export { Agent, jsonLogger, type AgentOptions, type Logger, type LogLevel } from './agent.js';
export { buildBatches } from './batches.js';
export { Outbox, type OutboxEntry, type OutboxOptions, type StoredEntry } from './outbox.js';
