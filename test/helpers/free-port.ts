// A free loopback TCP port for servers that cannot listen on port 0 themselves (postgres, redis-server).
import net from 'node:net';

/** Asks the kernel for an unused port on 127.0.0.1 and releases it; the caller binds it next. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : undefined;
      server.close(() => (port === undefined ? reject(new Error('no port from listen(0)')) : resolve(port)));
    });
  });
}
