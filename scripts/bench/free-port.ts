/**
 * A free loopback TCP port. Its own dependency-free module so that the tests (test/helpers/
 * process.ts) can share it without pulling in the bench's plumbing.
 */
import net from 'node:net';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
