// Interface language (English, Russian) and locale-aware formatting through Intl.
//
// The language is the one the person chose (localStorage), else the browser's first language we
// have, else English. Every number, size, date and duration on screen goes through the
// formatters here, so they follow the chosen language, not a mix of locales. No DOM access: the
// module is imported by the state tests under Node too.

export const LANGUAGES = { en: 'English', ru: 'Русский' };
const STORAGE_KEY = 'exporter-console-lang';

const en = {
  'app.title': 'Exporter console',
  'skip': 'Skip to content',
  'language': 'Language',
  'logout': 'Log out',
  'login.title': 'Sign in with your database account',
  'login.database': 'Database',
  'login.manager': 'Manager',
  'login.stream': 'Stream',
  'login.user': 'Database user',
  'login.password': 'Password',
  'login.submit': 'Sign in',
  'login.missing': 'Enter your database user and password.',
  'login.wrong': 'Wrong user name or password.',
  'login.locked': 'Too many attempts. Try again in {wait}.',
  'login.lockedSoon': 'Too many attempts. Wait a moment and try again.',
  'login.unreachable': 'The database is unreachable right now.',
  'login.offline': 'Cannot reach the server: {error}',
  'login.optionsFailed': 'Could not load the login options: {error}',
  'session.ended': 'Your session has ended. Please sign in again.',
  'catalog.title': 'Catalog',
  'catalog.runSelected': 'Run selected',
  'catalog.hint': 'Tick the groups and scripts to export. “Run selected” starts every ticked script; each group and script also has its own button.',
  'catalog.failed': 'Could not load the catalog: {error}',
  'catalog.scriptsOf': 'Scripts of {name}',
  'catalog.runGroup': 'Run group',
  'catalog.runGroupLabel': 'Run group {name}',
  'catalog.runScript': 'Run script',
  'catalog.runScriptLabel': 'Run script {name}',
  'catalog.modeOf': 'Export mode of {name}',
  'catalog.allColumns': 'All columns',
  'catalog.customColumns': 'Custom columns',
  'catalog.columns': 'Columns',
  'catalog.pickColumn': 'Pick at least one column for {name}, or export all columns.',
  'catalog.nothing': 'Nothing to run: tick at least one script.',
  'run.title': 'Run',
  'run.cancel': 'Cancel run',
  'run.confirmCancel': 'This export has been running for {elapsed}. Cancel it? Files already written are kept.',
  'run.empty': 'No run selected. Start one from the catalog or pick a recent run.',
  'run.what': 'What',
  'run.status': 'Status',
  'run.started': 'Started',
  'run.elapsed': 'Elapsed',
  'run.progress': 'Run progress',
  'run.startFailed': 'Could not start the run: {error}',
  'run.notFound': 'That run was not found (or belongs to someone else).',
  'run.loadFailed': 'Could not load the run: {error}',
  'run.liveFailed': 'Live updates for this run are unavailable: {error}',
  'run.cancelFailed': 'Could not cancel: {error}',
  'run.scriptsDone': '{done} of {total} scripts',
  'run.progressOf': 'Progress of {name}',
  'run.variantsOf': 'Variants of {name}',
  'run.variant': 'Variant {n}',
  'run.variantOf': 'variant {n} of {total}',
  'run.columnsCount': '{n} columns',
  'mode.AllGroups': 'Selected scripts',
  'mode.SingleGroup': 'Group',
  'mode.SingleScript': 'Script',
  'what.more': '{first} and {n} more',
  'rows': '{n} rows',
  'rate': '{rows} rows/s · {bytes}/s',
  'eta': 'about {eta} left',
  'percent': '{p}',
  'elapsed': '{d} elapsed',
  'stale': 'stale: not live',
  'took': 'took {d}',
  'files.title': 'Files',
  'files.empty': 'No files yet.',
  'files.zip': 'Download all (zip)',
  'files.linkFailed': 'Download failed: could not get a fresh download link',
  'recent.title': 'Recent runs',
  'recent.refresh': 'Refresh',
  'recent.empty': 'No runs yet.',
  'recent.older': 'Load older',
  'recent.open': 'Open',
  'recent.openLabel': '{label}: {what}, {when}',
  'recent.current': 'Open now',
  'conn.reconnecting': 'Connection to the server lost. Reconnecting…',
  'conn.disconnected': 'Live updates are disconnected. Retrying every few seconds…',
  'conn.retry': 'Reconnect now',
  'conn.error': 'Live updates: {error}',
  'dismiss': 'Dismiss error',
  'status.Queued': 'Queued',
  'status.Running': 'Running',
  'status.Success': 'Success',
  'status.NoData': 'No data',
  'status.Failed': 'Failed',
  'status.Cancelled': 'Cancelled',
  'unit.B': 'B', 'unit.kB': 'kB', 'unit.MB': 'MB', 'unit.GB': 'GB', 'unit.TB': 'TB',
};

const ru = {
  'app.title': 'Консоль выгрузок',
  'skip': 'К содержимому',
  'language': 'Язык',
  'logout': 'Выйти',
  'login.title': 'Вход под учётной записью базы данных',
  'login.database': 'База данных',
  'login.manager': 'Менеджер',
  'login.stream': 'Поток',
  'login.user': 'Пользователь БД',
  'login.password': 'Пароль',
  'login.submit': 'Войти',
  'login.missing': 'Введите пользователя базы данных и пароль.',
  'login.wrong': 'Неверное имя пользователя или пароль.',
  'login.locked': 'Слишком много попыток. Повторите через {wait}.',
  'login.lockedSoon': 'Слишком много попыток. Подождите немного и повторите.',
  'login.unreachable': 'База данных сейчас недоступна.',
  'login.offline': 'Сервер недоступен: {error}',
  'login.optionsFailed': 'Не удалось загрузить параметры входа: {error}',
  'session.ended': 'Сеанс завершён. Войдите снова.',
  'catalog.title': 'Каталог',
  'catalog.runSelected': 'Запустить выбранное',
  'catalog.hint': 'Отметьте группы и скрипты для выгрузки. «Запустить выбранное» запускает все отмеченные скрипты; у каждой группы и каждого скрипта есть и своя кнопка.',
  'catalog.failed': 'Не удалось загрузить каталог: {error}',
  'catalog.scriptsOf': 'Скрипты группы {name}',
  'catalog.runGroup': 'Запустить группу',
  'catalog.runGroupLabel': 'Запустить группу {name}',
  'catalog.runScript': 'Запустить скрипт',
  'catalog.runScriptLabel': 'Запустить скрипт {name}',
  'catalog.modeOf': 'Режим выгрузки: {name}',
  'catalog.allColumns': 'Все колонки',
  'catalog.customColumns': 'Выбранные колонки',
  'catalog.columns': 'Колонки',
  'catalog.pickColumn': 'Выберите хотя бы одну колонку для «{name}» или выгрузите все колонки.',
  'catalog.nothing': 'Нечего запускать: отметьте хотя бы один скрипт.',
  'run.title': 'Запуск',
  'run.cancel': 'Отменить запуск',
  'run.confirmCancel': 'Выгрузка идёт уже {elapsed}. Отменить её? Уже записанные файлы сохранятся.',
  'run.empty': 'Запуск не выбран. Запустите выгрузку из каталога или откройте недавний запуск.',
  'run.what': 'Что',
  'run.status': 'Статус',
  'run.started': 'Начало',
  'run.elapsed': 'Прошло',
  'run.progress': 'Ход запуска',
  'run.startFailed': 'Не удалось начать запуск: {error}',
  'run.notFound': 'Запуск не найден (или принадлежит другому пользователю).',
  'run.loadFailed': 'Не удалось загрузить запуск: {error}',
  'run.liveFailed': 'Обновления этого запуска в реальном времени недоступны: {error}',
  'run.cancelFailed': 'Не удалось отменить: {error}',
  'run.scriptsDone': 'скриптов: {done} из {total}',
  'run.progressOf': 'Ход скрипта {name}',
  'run.variantsOf': 'Варианты скрипта {name}',
  'run.variant': 'Вариант {n}',
  'run.variantOf': 'вариант {n} из {total}',
  'run.columnsCount': 'колонок: {n}',
  'mode.AllGroups': 'Выбранные скрипты',
  'mode.SingleGroup': 'Группа',
  'mode.SingleScript': 'Скрипт',
  'what.more': '{first} и ещё {n}',
  'rows': 'строк: {n}',
  'rate': '{rows} строк/с · {bytes}/с',
  'eta': 'осталось около {eta}',
  'percent': '{p}',
  'elapsed': 'идёт {d}',
  'stale': 'устарело: нет связи',
  'took': 'за {d}',
  'files.title': 'Файлы',
  'files.empty': 'Файлов пока нет.',
  'files.zip': 'Скачать всё (zip)',
  'files.linkFailed': 'Не удалось скачать: нет свежей ссылки',
  'recent.title': 'Недавние запуски',
  'recent.refresh': 'Обновить',
  'recent.empty': 'Запусков пока нет.',
  'recent.older': 'Показать более ранние',
  'recent.open': 'Открыть',
  'recent.openLabel': '{label}: {what}, {when}',
  'recent.current': 'Открыт',
  'conn.reconnecting': 'Связь с сервером потеряна. Переподключение…',
  'conn.disconnected': 'Обновления в реальном времени отключены. Повтор каждые несколько секунд…',
  'conn.retry': 'Подключиться сейчас',
  'conn.error': 'Обновления в реальном времени: {error}',
  'dismiss': 'Скрыть ошибку',
  'status.Queued': 'В очереди',
  'status.Running': 'Выполняется',
  'status.Success': 'Готово',
  'status.NoData': 'Нет данных',
  'status.Failed': 'Ошибка',
  'status.Cancelled': 'Отменён',
  'unit.B': 'Б', 'unit.kB': 'КБ', 'unit.MB': 'МБ', 'unit.GB': 'ГБ', 'unit.TB': 'ТБ',
};

export const MESSAGES = { en, ru };

/** The language to start with: stored choice, else the first browser language we have. */
export function pickLanguage(stored, browserLanguages = []) {
  if (stored && stored in MESSAGES) return stored;
  for (const tag of browserLanguages) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (base in MESSAGES) return base;
  }
  return 'en';
}

/** A translator with formatters bound to one language (pure: no globals). */
export function makeI18n(lang, browserLanguages = []) {
  const messages = MESSAGES[lang] ?? en;
  // The browser's own variant of the language (en-US dates for en-US), else a default one.
  const tag = browserLanguages.find((t) => String(t).toLowerCase().split('-')[0] === lang)
    ?? (lang === 'ru' ? 'ru-RU' : 'en-GB');
  const counts = new Intl.NumberFormat(tag);
  const oneDecimal = new Intl.NumberFormat(tag, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
  const twoDecimals = new Intl.NumberFormat(tag, { maximumFractionDigits: 2, minimumFractionDigits: 2 });
  const percent = new Intl.NumberFormat(tag, { style: 'percent', maximumFractionDigits: 0 });
  const dateTime = new Intl.DateTimeFormat(tag, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const unit = (u) => new Intl.NumberFormat(tag, { style: 'unit', unit: u, unitDisplay: 'narrow' });
  const hours = unit('hour');
  const minutes = unit('minute');
  const seconds = unit('second');

  const t = (key, params = {}) => {
    const text = messages[key] ?? en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ''));
  };
  return {
    lang,
    tag,
    t,
    status: (status) => (status ? t(`status.${status}`) : ''),
    count: (value) => counts.format(Math.round(Number(value) || 0)),
    percent: (fraction) => percent.format(Math.max(0, Math.min(1, fraction))),
    bytes(value) {
      let size = Number(value) || 0;
      const units = ['B', 'kB', 'MB', 'GB', 'TB'];
      let i = 0;
      while (size >= 1000 && i < units.length - 1) { size /= 1000; i += 1; }
      const number = i === 0 ? counts.format(size) : (size < 10 ? twoDecimals : oneDecimal).format(size);
      return `${number}\u00a0${t(`unit.${units[i]}`)}`;
    },
    duration(ms) {
      if (!Number.isFinite(ms) || ms < 0) return '';
      const total = Math.round(ms / 1000);
      if (ms < 10_000) return seconds.format(Math.round(ms / 100) / 10);
      const h = Math.floor(total / 3600);
      const m = Math.floor((total % 3600) / 60);
      const s = total % 60;
      if (h) return `${hours.format(h)} ${minutes.format(m)}`;
      if (m) return s ? `${minutes.format(m)} ${seconds.format(s)}` : minutes.format(m);
      return seconds.format(s);
    },
    time(iso) {
      if (!iso) return '';
      const date = new Date(iso);
      return Number.isNaN(date.getTime()) ? String(iso) : dateTime.format(date);
    },
  };
}

/** The stored language choice (browser only). */
export function storedLanguage() {
  try { return globalThis.localStorage?.getItem(STORAGE_KEY) ?? null; } catch { return null; }
}

export function storeLanguage(lang) {
  try { globalThis.localStorage?.setItem(STORAGE_KEY, lang); } catch { /* private mode */ }
}
