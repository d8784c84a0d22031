import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', '.tmp/**', 'reports/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      'no-console': 'error',
    },
  },
  {
    files: ['cli/**', 'bench/**', 'tests/**'],
    rules: { 'no-console': 'off' },
  },
  {
    // Layering (CONVENTIONS.md): shared/ imports from no other top-level folder;
    // api/ and workers/ never import each other.
    files: ['shared/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: ['**/api/**', '**/workers/**', '**/queues/**', '**/cli/**'] },
      ],
    },
  },
  {
    files: ['api/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/workers/**', '**/cli/**'] }] },
  },
  {
    files: ['workers/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/api/**', '**/cli/**'] }] },
  },
  {
    files: ['queues/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/api/**', '**/workers/**', '**/cli/**'] }] },
  },
);
