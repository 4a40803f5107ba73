/** P11KMS_PEERS_FILE (src/kms/peers.ts): the shapes it accepts and what it refuses, naming why. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PeersConfigError, loadPeers } from '../src/kms/peers.js';
import { tempDir } from './helpers/service.js';

const dir = tempDir('p11kms-peers-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const FP = 'AB:'.repeat(31) + 'AB';
const peer = { region: 'eu-central-1', endpoint: 'https://kms-b.example.net:4000/', accessKeyId: 'P11KMSPEERAB00000001', secretAccessKey: 'a-secret-of-some-length', fingerprint: FP };
const write = (name: string, text: string) => {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
};
const refusal = (file: string, served = ['eu-west-1']) => {
  try {
    loadPeers(file, served);
  } catch (e) {
    expect(e).toBeInstanceOf(PeersConfigError);
    return (e as Error).message;
  }
  throw new Error('accepted');
};

describe('P11KMS_PEERS_FILE', () => {
  it('reads JSON, and YAML with the secret in a file next to it; normalises endpoint and fingerprint', () => {
    const json = loadPeers(write('peers.json', JSON.stringify({ peers: [peer] })), ['eu-west-1']);
    expect(json.ofRegion('eu-central-1')).toEqual({ ...peer, endpoint: 'https://kms-b.example.net:4000', fingerprint: 'ab'.repeat(32) });
    expect(json.ofAccessKey('P11KMSPEERAB00000001')?.region).toBe('eu-central-1');
    expect(json.ofRegion('us-east-1')).toBeUndefined();
    write('b.secret', 'secret-from-a-file-0123\n');
    const { secretAccessKey: _, ...withoutSecret } = peer;
    const yaml = loadPeers(write('peers.yaml', `peers:\n  - ${Object.entries({ ...withoutSecret, secretAccessKeyFile: 'b.secret' }).map(([k, v]) => `${k}: "${v}"`).join('\n    ')}\n`), ['eu-west-1']);
    expect(yaml.ofRegion('eu-central-1')?.secretAccessKey).toBe('secret-from-a-file-0123');
  });

  it('refuses a served Region, a Region or access key named twice, both or neither secret, bad fields, unknown fields', () => {
    expect(refusal(write('served.json', JSON.stringify({ peers: [peer] })), ['eu-central-1'])).toContain('is served by this deployment');
    expect(refusal(write('twice.json', JSON.stringify({ peers: [peer, { ...peer, accessKeyId: 'P11KMSPEERAB00000002' }] })))).toContain('named twice');
    expect(refusal(write('key.json', JSON.stringify({ peers: [peer, { ...peer, region: 'us-west-2' }] })))).toContain('access key id is used by another peer');
    expect(refusal(write('both.json', JSON.stringify({ peers: [{ ...peer, secretAccessKeyFile: 'x' }] })))).toContain('exactly one of secretAccessKey and secretAccessKeyFile');
    expect(refusal(write('fp.json', JSON.stringify({ peers: [{ ...peer, fingerprint: 'abc' }] })))).toContain('peers.0.fingerprint');
    expect(refusal(write('url.json', JSON.stringify({ peers: [{ ...peer, endpoint: 'ftp://x' }] })))).toContain('peers.0.endpoint');
    expect(refusal(write('extra.json', JSON.stringify({ peers: [{ ...peer, password: 'x' }] })))).toContain('password');
    expect(refusal(write('nofile.json', JSON.stringify({ peers: [{ ...withoutSecretOf(peer), secretAccessKeyFile: 'missing.secret' }] })))).toContain('cannot read secretAccessKeyFile');
    expect(refusal(path.join(dir, 'absent.json'))).toContain('ENOENT');
  });

  it('never puts a secret into its messages', () => {
    const message = refusal(write('secret.json', JSON.stringify({ peers: [{ ...peer, fingerprint: 'zz' }] })));
    expect(message).not.toContain(peer.secretAccessKey);
  });
});

function withoutSecretOf(p: typeof peer) {
  const { secretAccessKey: _, ...rest } = p;
  return rest;
}
