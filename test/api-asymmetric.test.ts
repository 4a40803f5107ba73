/**
 * Asymmetric keys through the real AWS SDK: CreateKey for every spec and usage, DescribeKey and
 * GetPublicKey algorithm lists, Sign/Verify for every spec × algorithm × message type (each
 * signature checked by KMS and by node:crypto with the key from GetPublicKey), and RSA-OAEP
 * Encrypt/Decrypt/ReEncrypt with offline round trips.
 */
import crypto from 'node:crypto';
import {
  CreateKeyCommand,
  type CreateKeyCommandInput,
  DecryptCommand,
  DescribeKeyCommand,
  EncryptCommand,
  GetPublicKeyCommand,
  type KeyMetadata,
  ReEncryptCommand,
  SignCommand,
  type SigningAlgorithmSpec,
  VerifyCommand,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { errorOf, useTestService } from './helpers/service.js';

const t = useTestService();

async function createKey(input: CreateKeyCommandInput): Promise<KeyMetadata> {
  return (await t.client.send(new CreateKeyCommand(input))).KeyMetadata!;
}

async function publicKeyOf(keyId: string): Promise<crypto.KeyObject> {
  const out = await t.client.send(new GetPublicKeyCommand({ KeyId: keyId }));
  return crypto.createPublicKey({ key: Buffer.from(out.PublicKey!), format: 'der', type: 'spki' });
}

const RSA_SIGNING = ['RSASSA_PKCS1_V1_5_SHA_256', 'RSASSA_PKCS1_V1_5_SHA_384', 'RSASSA_PKCS1_V1_5_SHA_512', 'RSASSA_PSS_SHA_256', 'RSASSA_PSS_SHA_384', 'RSASSA_PSS_SHA_512'];

describe('CreateKey and DescribeKey', () => {
  it('creates every spec × usage AWS allows, with AWS algorithm lists', async () => {
    const cases: Array<[string, string, Partial<KeyMetadata>]> = [
      ['RSA_2048', 'ENCRYPT_DECRYPT', { EncryptionAlgorithms: ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'] }],
      ['RSA_3072', 'SIGN_VERIFY', { SigningAlgorithms: RSA_SIGNING as SigningAlgorithmSpec[] }],
      ['ECC_NIST_P256', 'SIGN_VERIFY', { SigningAlgorithms: ['ECDSA_SHA_256'] }],
      ['ECC_NIST_P384', 'KEY_AGREEMENT', { KeyAgreementAlgorithms: ['ECDH'] }],
      ['ECC_NIST_P521', 'SIGN_VERIFY', { SigningAlgorithms: ['ECDSA_SHA_512'] }],
      ['ECC_SECG_P256K1', 'SIGN_VERIFY', { SigningAlgorithms: ['ECDSA_SHA_256'] }],
      ['ECC_NIST_EDWARDS25519', 'SIGN_VERIFY', { SigningAlgorithms: ['ED25519_SHA_512', 'ED25519_PH_SHA_512'] }],
      ['HMAC_224', 'GENERATE_VERIFY_MAC', { MacAlgorithms: ['HMAC_SHA_224'] }],
      ['HMAC_512', 'GENERATE_VERIFY_MAC', { MacAlgorithms: ['HMAC_SHA_512'] }],
    ];
    for (const [KeySpec, KeyUsage, lists] of cases) {
      const created = await createKey({ KeySpec: KeySpec as never, KeyUsage: KeyUsage as never });
      expect(created).toMatchObject({ KeySpec, KeyUsage, KeyState: 'Enabled', Enabled: true, Origin: 'AWS_KMS', ...lists });
      const described = (await t.client.send(new DescribeKeyCommand({ KeyId: created.KeyId }))).KeyMetadata!;
      expect(described).toMatchObject({ KeySpec, KeyUsage, ...lists });
      for (const other of ['EncryptionAlgorithms', 'SigningAlgorithms', 'MacAlgorithms', 'KeyAgreementAlgorithms'] as const) {
        if (!(other in lists)) expect(described[other]).toBeUndefined();
      }
    }
  });

  it('accepts the legacy CustomerMasterKeySpec', async () => {
    const key = await createKey({ CustomerMasterKeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
    expect(key.KeySpec).toBe('ECC_NIST_P256');
  });

  it('refuses spec × usage pairs AWS refuses', async () => {
    for (const [KeySpec, KeyUsage] of [
      ['ECC_NIST_P256', undefined],
      ['ECC_NIST_P256', 'ENCRYPT_DECRYPT'],
      ['ECC_SECG_P256K1', 'KEY_AGREEMENT'],
      ['RSA_2048', 'KEY_AGREEMENT'],
      ['RSA_2048', 'GENERATE_VERIFY_MAC'],
      ['HMAC_256', undefined],
      ['HMAC_256', 'SIGN_VERIFY'],
      ['SYMMETRIC_DEFAULT', 'SIGN_VERIFY'],
      ['ECC_NIST_EDWARDS25519', 'KEY_AGREEMENT'],
    ] as const) {
      const err = await errorOf(t.client.send(new CreateKeyCommand({ KeySpec, KeyUsage })));
      expect(err.name, `${KeySpec}/${KeyUsage}`).toBe('ValidationException');
    }
  });

  it('answers UnsupportedOperationException naming the mechanism the token lacks', async () => {
    const err = await errorOf(t.client.send(new CreateKeyCommand({ KeySpec: 'ML_DSA_65', KeyUsage: 'SIGN_VERIFY' })));
    expect(err.name).toBe('UnsupportedOperationException');
    expect(err.message).toContain('CKM_ML_DSA');
    const sm2 = await errorOf(t.client.send(new CreateKeyCommand({ KeySpec: 'SM2', KeyUsage: 'SIGN_VERIFY' })));
    expect(sm2.name).toBe('UnsupportedOperationException');
  });
});

/** node:crypto's view of a KMS signing algorithm. */
function nodeVerify(algorithm: string, message: Buffer, key: crypto.KeyObject, signature: Buffer): boolean {
  if (algorithm === 'ED25519_SHA_512') return crypto.verify(null, message, key, signature);
  const hash = `sha${algorithm.slice(-3)}`;
  if (algorithm.startsWith('RSASSA_PSS')) {
    const saltLength = crypto.createHash(hash).digest().length;
    return crypto.verify(hash, message, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength }, signature);
  }
  return crypto.verify(hash, message, { key, dsaEncoding: 'der' }, signature);
}

describe('Sign and Verify', () => {
  const signingKeys: Array<[string, string[]]> = [
    ['RSA_2048', RSA_SIGNING],
    ['RSA_4096', RSA_SIGNING],
    ['ECC_NIST_P256', ['ECDSA_SHA_256']],
    ['ECC_NIST_P384', ['ECDSA_SHA_384']],
    ['ECC_NIST_P521', ['ECDSA_SHA_512']],
    ['ECC_SECG_P256K1', ['ECDSA_SHA_256']],
    ['ECC_NIST_EDWARDS25519', ['ED25519_SHA_512']],
  ];
  const message = Buffer.from('message to sign, as bytes');

  for (const [spec, algorithms] of signingKeys) {
    it(`${spec}: every algorithm × message type; KMS and node:crypto agree; tampering fails`, async () => {
      const key = await createKey({ KeySpec: spec as never, KeyUsage: 'SIGN_VERIFY' });
      const pub = await t.client.send(new GetPublicKeyCommand({ KeyId: key.KeyId }));
      expect(pub).toMatchObject({ KeyId: key.Arn, KeySpec: spec, KeyUsage: 'SIGN_VERIFY', SigningAlgorithms: expect.arrayContaining(algorithms) });
      expect(pub.EncryptionAlgorithms).toBeUndefined();
      const publicKey = crypto.createPublicKey({ key: Buffer.from(pub.PublicKey!), format: 'der', type: 'spki' });
      for (const SigningAlgorithm of algorithms as SigningAlgorithmSpec[]) {
        const isEd = SigningAlgorithm === 'ED25519_SHA_512';
        const messageTypes = isEd ? (['RAW'] as const) : (['RAW', 'DIGEST'] as const);
        for (const MessageType of messageTypes) {
          const input = MessageType === 'RAW' ? message : crypto.createHash(`sha${SigningAlgorithm.slice(-3)}`).update(message).digest();
          const signed = await t.client.send(new SignCommand({ KeyId: key.KeyId, Message: input, MessageType, SigningAlgorithm }));
          expect(signed.KeyId).toBe(key.Arn);
          expect(signed.SigningAlgorithm).toBe(SigningAlgorithm);
          const signature = Buffer.from(signed.Signature!);
          expect(nodeVerify(SigningAlgorithm, message, publicKey, signature), `${SigningAlgorithm}/${MessageType}`).toBe(true);
          // Verify through KMS with either message type, whichever was signed.
          for (const verifyType of messageTypes) {
            const verifyInput = verifyType === 'RAW' ? message : crypto.createHash(`sha${SigningAlgorithm.slice(-3)}`).update(message).digest();
            const verified = await t.client.send(new VerifyCommand({ KeyId: key.KeyId, Message: verifyInput, MessageType: verifyType, Signature: signature, SigningAlgorithm }));
            expect(verified).toMatchObject({ KeyId: key.Arn, SignatureValid: true, SigningAlgorithm });
          }
          const tampered = Buffer.from(signature);
          tampered[tampered.length - 3]! ^= 0x01;
          const bad = await errorOf(t.client.send(new VerifyCommand({ KeyId: key.KeyId, Message: input, MessageType, Signature: tampered, SigningAlgorithm })));
          expect(bad.name).toBe('KMSInvalidSignatureException');
          const otherMessage = await errorOf(
            t.client.send(new VerifyCommand({ KeyId: key.KeyId, Message: Buffer.from('another message'), Signature: signature, SigningAlgorithm })),
          );
          expect(otherMessage.name).toBe('KMSInvalidSignatureException');
        }
      }
    });
  }

  it('rejects garbage and signatures by another key', async () => {
    const key = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
    const stranger = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const foreign = crypto.sign('sha256', Buffer.from('m'), stranger.privateKey);
    for (const Signature of [foreign, Buffer.from('not DER at all'), Buffer.alloc(64, 1), Buffer.from('3006020100020100', 'hex')]) {
      const err = await errorOf(t.client.send(new VerifyCommand({ KeyId: key.KeyId, Message: Buffer.from('m'), Signature, SigningAlgorithm: 'ECDSA_SHA_256' })));
      expect(err.name).toBe('KMSInvalidSignatureException');
    }
    const rsa = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'SIGN_VERIFY' });
    for (const Signature of [Buffer.alloc(256, 0xff), Buffer.alloc(256, 0), Buffer.alloc(10, 1)]) {
      const err = await errorOf(t.client.send(new VerifyCommand({ KeyId: rsa.KeyId, Message: Buffer.from('m'), Signature, SigningAlgorithm: 'RSASSA_PSS_SHA_256' })));
      expect(err.name).toBe('KMSInvalidSignatureException');
    }
  });

  it('checks digest lengths, algorithms and message types', async () => {
    const key = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
    const shortDigest = await errorOf(t.client.send(new SignCommand({ KeyId: key.KeyId, Message: Buffer.alloc(31), MessageType: 'DIGEST', SigningAlgorithm: 'ECDSA_SHA_256' })));
    expect(shortDigest.name).toBe('ValidationException');
    const wrongAlg = await errorOf(t.client.send(new SignCommand({ KeyId: key.KeyId, Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_384' })));
    expect(wrongAlg.name).toBe('InvalidKeyUsageException');
    const rsaAlg = await errorOf(t.client.send(new SignCommand({ KeyId: key.KeyId, Message: Buffer.from('m'), SigningAlgorithm: 'RSASSA_PSS_SHA_256' })));
    expect(rsaAlg.name).toBe('InvalidKeyUsageException');
    const ed = await createKey({ KeySpec: 'ECC_NIST_EDWARDS25519', KeyUsage: 'SIGN_VERIFY' });
    const edDigest = await errorOf(t.client.send(new SignCommand({ KeyId: ed.KeyId, Message: Buffer.alloc(64), MessageType: 'DIGEST', SigningAlgorithm: 'ED25519_SHA_512' })));
    expect(edDigest.name).toBe('ValidationException');
    const dryRun = await errorOf(t.client.send(new SignCommand({ KeyId: key.KeyId, Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256', DryRun: true })));
    expect(dryRun.name).toBe('DryRunOperationException');
  });

  it('signs with the key while it is enabled only', async () => {
    const key = await createKey({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' });
    const { DisableKeyCommand } = await import('@aws-sdk/client-kms');
    await t.client.send(new DisableKeyCommand({ KeyId: key.KeyId }));
    const err = await errorOf(t.client.send(new SignCommand({ KeyId: key.KeyId, Message: Buffer.from('m'), SigningAlgorithm: 'ECDSA_SHA_256' })));
    expect(err.name).toBe('DisabledException');
    expect((await errorOf(t.client.send(new GetPublicKeyCommand({ KeyId: key.KeyId })))).name).toBe('DisabledException');
  });
});

describe('RSA encryption', () => {
  /** Created by the first test, used by the RSA_4096 case (RSA-4096 generation is slow). */
  const keysBySpec = new Map<string, KeyMetadata>();

  it('RSA-4096 CreateKey runs off the event loop: other requests complete meanwhile', async () => {
    const sym = await createKey({});
    let done = false;
    const creating = createKey({ KeySpec: 'RSA_4096', KeyUsage: 'ENCRYPT_DECRYPT' }).finally(() => (done = true));
    let completedMeanwhile = 0;
    while (!done) {
      await t.client.send(new EncryptCommand({ KeyId: sym.KeyId, Plaintext: Buffer.from('still served') }));
      if (!done) completedMeanwhile++;
    }
    keysBySpec.set('RSA_4096', await creating);
    expect(completedMeanwhile).toBeGreaterThan(0);
  });

  const cases: Array<[string, Array<[string, string, number]>]> = [
    [
      'RSA_2048',
      [
        ['RSAES_OAEP_SHA_1', 'sha1', 214],
        ['RSAES_OAEP_SHA_256', 'sha256', 190],
      ],
    ],
    [
      'RSA_4096',
      [
        ['RSAES_OAEP_SHA_1', 'sha1', 470],
        ['RSAES_OAEP_SHA_256', 'sha256', 446],
      ],
    ],
  ];
  for (const [spec, algorithms] of cases) {
    it(`${spec}: KMS and offline encryption both decrypt through KMS, up to AWS's limits`, async () => {
      const key = keysBySpec.get(spec) ?? (await createKey({ KeySpec: spec as never, KeyUsage: 'ENCRYPT_DECRYPT' }));
      const publicKey = await publicKeyOf(key.KeyId!);
      for (const [EncryptionAlgorithm, oaepHash, limit] of algorithms as Array<[never, string, number]>) {
        for (const size of [1, limit]) {
          const plaintext = crypto.randomBytes(size);
          const viaKms = await t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: plaintext, EncryptionAlgorithm }));
          expect(viaKms).toMatchObject({ KeyId: key.Arn, EncryptionAlgorithm });
          expect(viaKms.CiphertextBlob!.length).toBe(Number(spec.slice(4)) / 8); // raw RSAES-OAEP, no envelope
          const offline = crypto.publicEncrypt({ key: publicKey, oaepHash, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING }, plaintext);
          for (const CiphertextBlob of [viaKms.CiphertextBlob!, offline]) {
            const out = await t.client.send(new DecryptCommand({ KeyId: key.KeyId, CiphertextBlob, EncryptionAlgorithm }));
            expect(Buffer.from(out.Plaintext!).equals(plaintext)).toBe(true);
            expect(out).toMatchObject({ KeyId: key.Arn, EncryptionAlgorithm });
          }
        }
        const tooLong = await errorOf(t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.alloc(limit + 1), EncryptionAlgorithm })));
        expect(tooLong.name).toBe('ValidationException');
      }
    });
  }

  it('needs KeyId and the right algorithm to decrypt; tampering is InvalidCiphertext', async () => {
    const key = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
    const enc = await t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('secret'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    const noAlgorithm = await errorOf(t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('x') })));
    expect(noAlgorithm.name).toBe('InvalidKeyUsageException');
    expect((await errorOf(t.client.send(new DecryptCommand({ KeyId: key.KeyId, CiphertextBlob: enc.CiphertextBlob })))).name).toBe('InvalidKeyUsageException');
    expect((await errorOf(t.client.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })))).name).toBe(
      'InvalidCiphertextException',
    );
    const wrongHash = await errorOf(t.client.send(new DecryptCommand({ KeyId: key.KeyId, CiphertextBlob: enc.CiphertextBlob, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' })));
    expect(wrongHash.name).toBe('InvalidCiphertextException');
    const tampered = Buffer.from(enc.CiphertextBlob!);
    tampered[7]! ^= 1;
    const bad = await errorOf(t.client.send(new DecryptCommand({ KeyId: key.KeyId, CiphertextBlob: tampered, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' })));
    expect(bad.name).toBe('InvalidCiphertextException');
    const withContext = await errorOf(
      t.client.send(new EncryptCommand({ KeyId: key.KeyId, Plaintext: Buffer.from('x'), EncryptionAlgorithm: 'RSAES_OAEP_SHA_1', EncryptionContext: { a: 'b' } })),
    );
    expect(withContext.name).toBe('ValidationException');
  });

  it('ReEncrypt between symmetric and RSA keys, both directions', async () => {
    const rsa = await createKey({ KeySpec: 'RSA_2048', KeyUsage: 'ENCRYPT_DECRYPT' });
    const sym = await createKey({});
    const plaintext = Buffer.from('moving between keys');
    const symBlob = (await t.client.send(new EncryptCommand({ KeyId: sym.KeyId, Plaintext: plaintext, EncryptionContext: { purpose: 'test' } }))).CiphertextBlob!;
    const toRsa = await t.client.send(
      new ReEncryptCommand({ CiphertextBlob: symBlob, SourceEncryptionContext: { purpose: 'test' }, DestinationKeyId: rsa.KeyId, DestinationEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }),
    );
    expect(toRsa).toMatchObject({ KeyId: rsa.Arn, SourceKeyId: sym.Arn, SourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT', DestinationEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' });
    const opened = await t.client.send(new DecryptCommand({ KeyId: rsa.KeyId, CiphertextBlob: toRsa.CiphertextBlob, EncryptionAlgorithm: 'RSAES_OAEP_SHA_256' }));
    expect(Buffer.from(opened.Plaintext!).equals(plaintext)).toBe(true);

    const back = await t.client.send(
      new ReEncryptCommand({ CiphertextBlob: toRsa.CiphertextBlob, SourceKeyId: rsa.KeyId, SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', DestinationKeyId: sym.KeyId }),
    );
    expect(back).toMatchObject({ KeyId: sym.Arn, SourceKeyId: rsa.Arn, SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT' });
    expect(Buffer.from((await t.client.send(new DecryptCommand({ CiphertextBlob: back.CiphertextBlob }))).Plaintext!).equals(plaintext)).toBe(true);

    const rsaToRsa = await t.client.send(
      new ReEncryptCommand({
        CiphertextBlob: toRsa.CiphertextBlob,
        SourceKeyId: rsa.KeyId,
        SourceEncryptionAlgorithm: 'RSAES_OAEP_SHA_256',
        DestinationKeyId: rsa.KeyId,
        DestinationEncryptionAlgorithm: 'RSAES_OAEP_SHA_1',
      }),
    );
    const again = await t.client.send(new DecryptCommand({ KeyId: rsa.KeyId, CiphertextBlob: rsaToRsa.CiphertextBlob, EncryptionAlgorithm: 'RSAES_OAEP_SHA_1' }));
    expect(Buffer.from(again.Plaintext!).equals(plaintext)).toBe(true);
  });
});
