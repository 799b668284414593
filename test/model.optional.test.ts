// Without the optional peer dependency @huggingface/transformers, the model side fails with an
// error that names the package and how to install it, and the rest of saekit is unaffected.
import { describe, expect, it, vi } from 'vitest';

describe('optional @huggingface/transformers', () => {
  it('a missing package is a clear error naming it; doctor says the model side is unavailable', async () => {
    vi.resetModules();
    vi.doMock('@huggingface/transformers', () => {
      throw new Error("Cannot find package '@huggingface/transformers'");
    });
    try {
      const { loadTransformers, LanguageModel } = await import('../src/model/languageModel.js');
      await expect(loadTransformers()).rejects.toThrow(/@huggingface\/transformers.*npm install @huggingface\/transformers/);
      await expect(LanguageModel.load('/nonexistent-model-dir-for-this-test')).rejects.toThrow(/neither an existing folder nor a hub id/);
      const { runCli } = await import('./helpers/cli.js');
      const r = await runCli('doctor');
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/model side: unavailable \(optional @huggingface\/transformers not installed/);
    } finally {
      vi.doUnmock('@huggingface/transformers');
      vi.resetModules();
    }
  });
});
