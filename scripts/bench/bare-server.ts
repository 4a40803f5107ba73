/**
 * The baseline: a bare node:http server that reads the request body and answers every POST with a
 * fixed KMS Encrypt response body (captured from the real service), and GET /healthz with 200.
 * Usage: node bare-server.js <port> <response-body-file>
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const port = Number(process.argv[2]);
const body = Buffer.from(fs.readFileSync(process.argv[3]!, 'utf8'));

const server = http.createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok');
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/x-amz-json-1.1',
      'content-length': body.length,
      'x-amzn-requestid': crypto.randomUUID(),
    });
    res.end(body);
  });
});
server.listen(port, '127.0.0.1');
process.once('SIGTERM', () => server.close(() => process.exit(0)));
