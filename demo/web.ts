// The demo sandbox's web services: prod's HTTPS status API (self-signed) and staging's plain web page.
// Started by demo/run.sh; prints "ready" when both listen, exits on SIGTERM.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const [certFile, keyFile] = process.argv.slice(2);
if (!certFile || !keyFile) {
  process.stderr.write('usage: web.js CERT KEY\n');
  process.exit(2);
}
const prod = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', server: 'prod-status/1.0' }).end('{"status":"ok"}\n');
});
const staging = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', server: 'staging-web/1.0' }).end('staging\n');
});
let listening = 0;
const ready = () => {
  if (++listening === 2) process.stdout.write('ready\n');
};
prod.listen(18443, '127.0.10.1', ready);
staging.listen(18080, '127.0.20.1', ready);
for (const server of [prod, staging]) {
  server.on('error', (err) => {
    process.stderr.write(`demo web server: ${err.message}\n`);
    process.exit(1);
  });
}
process.on('SIGTERM', () => process.exit(0));
