import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'bin/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: { allowDefaultProject: ['eslint.config.mjs', 'bin/*.js'] }, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Domain code stays free of transports and frameworks' edges: only adapters
    // (under redis/ or embedded/) and apps may reach for them.
    files: ['libs/*/src/**/*.ts'],
    ignores: ['libs/*/src/redis/**', 'libs/*/src/embedded/**', 'libs/storage/**', 'libs/gateway/**', 'libs/transport/**', 'libs/health/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'ioredis', message: 'Only Redis adapters (redis/) use ioredis.' },
            { name: 'aedes', message: 'Only the gateway uses aedes.' },
            { name: 'lmdb', message: 'Only embedded adapters (embedded/) use lmdb.' },
            { name: '@nestjs/microservices', message: 'Only transport wiring uses @nestjs/microservices.' },
          ],
          patterns: [{ group: ['@nestjs/common/exceptions*'], message: 'Domain code throws DomainError, never HTTP exceptions.' }],
        },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: 'NewExpression[callee.name=/^(HttpException|BadRequestException|NotFoundException|ForbiddenException|UnauthorizedException)$/]',
          message: 'Domain code throws DomainError, never HTTP exceptions.',
        },
      ],
    },
  },
  {
    files: ['**/*.spec.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
);
