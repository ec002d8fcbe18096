// Loaded before the application: records every script error, rejected promise, console
// error or warning and CSP violation in `window.concordErrors`, and shows them at the foot
// of the page. Operators see what broke; the browser tests read the list and require it empty.
(function () {
  'use strict';
  var errors = [];
  window.concordErrors = errors;
  function show() {
    var box = document.getElementById('script-errors');
    if (!box) { return; }
    box.hidden = false;
    box.textContent = 'Script problems on this page (please report them): ' + errors.join(' | ');
  }
  function record(kind, message) {
    errors.push(kind + ': ' + message);
    if (document.readyState === 'loading') {
      document.addEventListener('DOMContentLoaded', show);
    } else {
      show();
    }
  }
  window.addEventListener('error', function (e) {
    record('error', (e.message || String(e.error)) + ' at ' + e.filename + ':' + e.lineno + ':' + e.colno);
  });
  window.addEventListener('unhandledrejection', function (e) {
    var r = e.reason;
    record('unhandled rejection', r && r.stack ? r.stack : String(r));
  });
  document.addEventListener('securitypolicyviolation', function (e) {
    record('content security policy', e.violatedDirective + ' blocked ' + e.blockedURI);
  });
  ['error', 'warn'].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      var parts = [];
      for (var i = 0; i < arguments.length; i++) { parts.push(String(arguments[i])); }
      record('console.' + level, parts.join(' '));
      return original.apply(console, arguments);
    };
  });
})();
