// Node servers on 127.0.0.1:0 for probe tests: listen, track accepted sockets, stop with them ended.
import net from 'node:net';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';

const accepted = new WeakMap<net.Server, Set<net.Socket>>();

/** Listens on 127.0.0.1:0 and tracks accepted sockets so `stop` can end them. */
export async function listen(server: net.Server): Promise<number> {
  const sockets = new Set<net.Socket>();
  accepted.set(server, sockets);
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

/** Destroys the sockets `listen` tracked and resolves once the server is closed. */
export function stop(server: net.Server): Promise<void> {
  for (const socket of accepted.get(server) ?? []) socket.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Waits until the server holds no connection (the probe hung up), or fails after `ms`. */
export async function noConnectionsWithin(server: net.Server, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  for (;;) {
    const count = await new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
    if (count === 0) return;
    if (performance.now() > deadline) throw new Error(`server still holds ${count} connection(s) after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A Node (or Node TLS) server on 127.0.0.1:0 that hands each connection to `onConnection`; close() also drops live sockets. */
export async function fakeServer(onConnection: (socket: net.Socket) => void, secure?: { key: string; cert: string }) {
  const handle = (socket: net.Socket) => {
    socket.on('error', () => {});
    onConnection(socket);
  };
  const server = secure ? tls.createServer(secure, handle) : net.createServer(handle);
  return { port: await listen(server), close: () => stop(server) };
}

/** Answers whatever arrives first with `reply`, then optionally hangs up. */
export const replyOnData = (reply: Buffer | string, hangUp = false) => (socket: net.Socket) =>
  socket.once('data', () => (hangUp ? socket.end(reply) : socket.write(reply)));
