import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type PostgresServer } from '../helpers/postgres-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function raw(port: number, send: Buffer, tlsAfterS = false): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let data = Buffer.alloc(0);
    s.on('connect', () => s.write(send));
    s.on('data', (d) => { data = Buffer.concat([data, d]); s.destroy(); resolve(data); });
    s.on('close', () => resolve(data));
  });
}
describe('scratch', () => {
  let pg: PostgresServer;
  beforeAll(async () => { pg = await startPostgres({ hba: 'host all all 127.0.0.1/32 scram-sha-256\n', ssl: true }); });
  afterAll(async () => { await pg?.stop(); });
  it('logs', async () => {
    const t0 = Date.now();
    console.log('log at start:\n' + pg.log());
    const before = pg.log().length;
    const r = await raw(pg.port, Buffer.from('0000000804d2162f', 'hex'));
    await sleep(300);
    const b2 = pg.log().length;
    for (const how of ['end', 'destroy', 'endplain']) {
      const b = pg.log().length;
      await new Promise<void>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: pg.port });
        s.on('connect', () => s.write(Buffer.from('0000000804d2162f', 'hex')));
        s.once('data', (d) => {
          if (how === 'endplain') { s.end(); s.on('close', () => resolve()); return; }
          const t = tls.connect({ socket: s, rejectUnauthorized: false });
          t.once('secureConnect', () => { console.log('tls ok', t.getProtocol()); if (how === 'end') t.end(); else t.destroy(); });
          t.on('error', (e) => console.log('tls err', e));
          t.on('close', () => resolve());
        });
      });
      await sleep(300);
      console.log(how, 'log:\n' + pg.log().slice(b));
    }
    console.log('reply', r, 'log after S+close:\n' + pg.log().slice(before));
  });
});
