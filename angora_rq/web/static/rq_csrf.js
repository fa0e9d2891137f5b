// rq-dashboard's buttons post with jQuery: send the session's CSRF token with them, as Angora's own pages do
// (the token is in the page's <meta name="csrf-token">; templates/rq_dashboard/base.html).
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && window.jQuery) {
    window.jQuery.ajaxSetup({headers: {"X-CSRF-Token": meta.getAttribute("content")}});
  }
})();
