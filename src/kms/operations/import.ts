/**
 * Imported key material operations: GetParametersForImport, ImportKeyMaterial,
 * DeleteImportedKeyMaterial. The semantics live in ../lifecycle/key-import.ts.
 */
import type { OperationHandler } from '../context.js';
import { arnOfKey, resolveAuthorizedKey } from '../keys.js';
import { createImportParameters, deleteImportedKeyMaterial, importKeyMaterial } from '../lifecycle/key-import.js';

const getParametersForImport: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'GetParametersForImport', { allowAlias: false });
  const parameters = await createImportParameters(svc, key, input.WrappingAlgorithm, input.WrappingKeySpec);
  return { KeyId: arnOfKey(svc, key), ImportToken: parameters.importToken, PublicKey: parameters.publicKey, ParametersValidTo: parameters.validTo };
};

const importKeyMaterialHandler: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'ImportKeyMaterial', { allowAlias: false });
  const { keyMaterialId } = await importKeyMaterial(svc, key, {
    importToken: input.ImportToken,
    encryptedKeyMaterial: input.EncryptedKeyMaterial,
    expirationModel: input.ExpirationModel,
    validTo: input.ValidTo,
    importType: input.ImportType,
    description: input.KeyMaterialDescription,
    keyMaterialId: input.KeyMaterialId,
  });
  return { KeyId: arnOfKey(svc, key), KeyMaterialId: keyMaterialId };
};

const deleteImportedKeyMaterialHandler: OperationHandler = async (input, ctx, svc) => {
  const key = await resolveAuthorizedKey(svc, ctx, input.KeyId, 'DeleteImportedKeyMaterial', { allowAlias: false });
  const keyMaterialId = await deleteImportedKeyMaterial(svc, key, input.KeyMaterialId);
  return { KeyId: arnOfKey(svc, key), KeyMaterialId: keyMaterialId };
};

export const importOperations = {
  GetParametersForImport: getParametersForImport,
  ImportKeyMaterial: importKeyMaterialHandler,
  DeleteImportedKeyMaterial: deleteImportedKeyMaterialHandler,
};
