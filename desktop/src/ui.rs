//! The window. Widgets render the view models of [`crate::model`]; every user action becomes a
//! [`Command`] for the backend, and every [`Update`] from it goes through a model first.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use adw::prelude::*;
use cairn_client::conflicts::{ConflictRecord, Keep};
use cairn_client::daemon::FeedEvent;
use gtk::{gio, glib};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::backend::{self, Command, Started, Update};
use crate::model::{self, Dashboard, Feed, Field, FileRow, FileStatus, LiveStatus, SetupForm};

/// The app's id (D-Bus name, desktop file, notifications).
const APP_ID: &str = "org.cairn.Desktop";

/// Feed rows shown.
const FEED_ROWS_MAX: usize = model::FEED_ITEMS_MAX;

/// Runs the app until its window closes.
pub(crate) fn run(config_dir: PathBuf, background: bool) -> ExitCode {
    let app = adw::Application::builder()
        .application_id(APP_ID)
        .flags(gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let config_dir = Rc::new(config_dir);
    app.connect_activate(move |app| {
        if let Some(window) = app.active_window() {
            window.present();
            return;
        }
        match Ui::build(app, (*config_dir).clone()) {
            Ok(ui) => {
                if !background {
                    ui.window.present();
                } else {
                    ui.window.set_visible(false);
                }
            }
            Err(message) => {
                eprintln!("cairn-desktop: {message}");
                app.quit();
            }
        }
    });
    // GTK must not parse our arguments (they were checked in main).
    let status = app.run_with_args::<&str>(&[]);
    if status == glib::ExitCode::SUCCESS {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Setup view widgets.
struct SetupView {
    root: gtk::Widget,
    server: adw::EntryRow,
    username: adw::EntryRow,
    email: adw::EntryRow,
    password: adw::PasswordEntryRow,
    folder: adw::EntryRow,
    register: gtk::Switch,
    problem: gtk::Label,
    submit: gtk::Button,
    spinner: gtk::Spinner,
}

/// Status view widgets.
struct StatusView {
    root: gtk::Widget,
    icon: gtk::Image,
    headline: gtk::Label,
    last_sync: gtk::Label,
    progress: gtk::ProgressBar,
    transfer: gtk::Label,
    error_box: gtk::Box,
    error: gtk::Label,
    advice: gtk::Label,
    server: adw::ActionRow,
    account: adw::ActionRow,
    folder: adw::ActionRow,
    storage: adw::ActionRow,
    storage_bar: gtk::LevelBar,
    conflicts: adw::ActionRow,
    mode: adw::ActionRow,
}

/// Files view widgets.
struct FilesView {
    root: gtk::Widget,
    path: gtk::Label,
    up: gtk::Button,
    list: gtk::ListBox,
}

/// Activity view widgets.
struct FeedView {
    root: gtk::Widget,
    list: gtk::ListBox,
    empty: adw::StatusPage,
}

/// Conflicts view widgets.
struct ConflictsView {
    root: gtk::Widget,
    list: gtk::ListBox,
    empty: adw::StatusPage,
}

/// What the window shows, and the models behind it.
struct State {
    dashboard: Dashboard,
    feed: Feed,
    live: LiveStatus,
    conflicts: Vec<ConflictRecord>,
    started: Option<Started>,
    dir: String,
    rows: Vec<FileRow>,
    more: usize,
    paused: bool,
    history: Option<(adw::Window, gtk::ListBox, String)>,
}

/// The window and its parts.
struct Ui {
    app: adw::Application,
    window: adw::ApplicationWindow,
    toasts: adw::ToastOverlay,
    pages: gtk::Stack,
    views: adw::ViewStack,
    title: adw::ViewSwitcherTitle,
    pause: gtk::ToggleButton,
    sync_now: gtk::Button,
    prefs_button: gtk::Button,
    setup: SetupView,
    status: StatusView,
    files: FilesView,
    feed: FeedView,
    conflicts: ConflictsView,
    commands: UnboundedSender<Command>,
    state: RefCell<State>,
}

/// A widget of GTK class `class` with an accessible label for screen readers. (The bindings
/// for GTK 4.8 cannot set one on a built widget; GtkBuilder can.)
fn labelled<W: IsA<gtk::Widget> + IsA<glib::Object>>(class: &str, label: &str) -> W {
    let xml = format!(
        r#"<interface><object class="{class}" id="w"><accessibility><property name="label">{}</property></accessibility></object></interface>"#,
        glib::markup_escape_text(label)
    );
    gtk::Builder::from_string(&xml)
        .object::<W>("w")
        .expect("a GTK class of this program's own choosing builds")
}

/// An icon-only button whose tooltip is also its accessible name.
fn icon_button(icon: &str, tooltip: &str) -> gtk::Button {
    let button: gtk::Button = labelled("GtkButton", tooltip);
    button.set_icon_name(icon);
    button.set_tooltip_text(Some(tooltip));
    button
}

/// Hides every `T` inside `widget` (for a composite widget whose own parts have no accessible
/// name and are not needed).
fn hide_all<T: IsA<gtk::Widget>>(widget: &impl IsA<gtk::Widget>) {
    let mut stack = vec![widget.clone().upcast::<gtk::Widget>()];
    while let Some(current) = stack.pop() {
        if current.is::<T>() {
            current.set_visible(false);
        }
        let mut child = current.first_child();
        while let Some(next) = child {
            child = next.next_sibling();
            stack.push(next);
        }
    }
}

/// A switch for a preferences row, named like the row for screen readers.
fn labelled_switch(label: &str, active: bool) -> gtk::Switch {
    let switch: gtk::Switch = labelled("GtkSwitch", label);
    switch.set_active(active);
    switch.set_valign(gtk::Align::Center);
    switch
}

fn clear(list: &gtk::ListBox) {
    while let Some(child) = list.first_child() {
        list.remove(&child);
    }
}

fn scrolled(child: &impl IsA<gtk::Widget>) -> gtk::ScrolledWindow {
    gtk::ScrolledWindow::builder()
        .hscrollbar_policy(gtk::PolicyType::Never)
        .vexpand(true)
        .child(child)
        .build()
}

fn clamped(child: &impl IsA<gtk::Widget>) -> adw::Clamp {
    adw::Clamp::builder()
        .maximum_size(760)
        .tightening_threshold(560)
        .margin_top(18)
        .margin_bottom(18)
        .margin_start(12)
        .margin_end(12)
        .child(child)
        .build()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_seconds() -> f64 {
    thread_local! {
        static START: std::time::Instant = std::time::Instant::now();
    }
    START.with(|start| start.elapsed().as_secs_f64())
}

fn open_path(path: &std::path::Path) {
    let uri = gio::File::for_path(path).uri();
    if let Err(err) = gio::AppInfo::launch_default_for_uri(&uri, None::<&gio::AppLaunchContext>) {
        eprintln!("cairn-desktop: cannot open {}: {err}", path.display());
    }
}

impl Ui {
    fn build(app: &adw::Application, config_dir: PathBuf) -> Result<Rc<Ui>, String> {
        let (updates_tx, mut updates) = unbounded_channel();
        let commands = backend::spawn(config_dir, updates_tx)
            .map_err(|e| format!("cannot start the sync backend: {e}"))?;

        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title("Cairn")
            .default_width(920)
            .default_height(680)
            .build();
        let views = adw::ViewStack::new();
        let title = adw::ViewSwitcherTitle::builder()
            .stack(&views)
            .title("Cairn")
            .build();
        let header = adw::HeaderBar::new();
        header.set_title_widget(Some(&title));
        let pause: gtk::ToggleButton = labelled("GtkToggleButton", "Pause syncing");
        pause.set_icon_name("media-playback-pause-symbolic");
        pause.set_tooltip_text(Some("Pause syncing"));
        let sync_now = icon_button("view-refresh-symbolic", "Sync now (F5)");
        let prefs_button = icon_button("emblem-system-symbolic", "Preferences (Ctrl+,)");
        header.pack_start(&pause);
        header.pack_start(&sync_now);
        header.pack_end(&prefs_button);
        let switcher_bar = adw::ViewSwitcherBar::builder().stack(&views).build();
        title
            .bind_property("title-visible", &switcher_bar, "reveal")
            .sync_create()
            .build();

        let setup = SetupView::build();
        let status = StatusView::build();
        let files = FilesView::build();
        let feed = FeedView::build();
        let conflicts = ConflictsView::build();
        views
            .add_titled(&status.root, Some("status"), "Status")
            .set_icon_name(Some("emblem-synchronizing-symbolic"));
        views
            .add_titled(&files.root, Some("files"), "Files")
            .set_icon_name(Some("folder-symbolic"));
        views
            .add_titled(&feed.root, Some("activity"), "Activity")
            .set_icon_name(Some("document-open-recent-symbolic"));
        views
            .add_titled(&conflicts.root, Some("conflicts"), "Conflicts")
            .set_icon_name(Some("dialog-warning-symbolic"));

        let main_page = gtk::Box::new(gtk::Orientation::Vertical, 0);
        main_page.append(&views);
        main_page.append(&switcher_bar);
        views.set_vexpand(true);
        let loading = gtk::Box::new(gtk::Orientation::Vertical, 12);
        let spinner = gtk::Spinner::builder()
            .spinning(true)
            .width_request(32)
            .height_request(32)
            .valign(gtk::Align::Center)
            .vexpand(true)
            .build();
        loading.append(&spinner);
        let pages = gtk::Stack::builder()
            .transition_type(gtk::StackTransitionType::Crossfade)
            .build();
        pages.add_named(&loading, Some("loading"));
        pages.add_named(&setup.root, Some("setup"));
        pages.add_named(&main_page, Some("main"));
        pages.set_visible_child_name("loading");
        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&pages));
        let root = gtk::Box::new(gtk::Orientation::Vertical, 0);
        root.append(&header);
        root.append(&toasts);
        window.set_content(Some(&root));

        let ui = Rc::new(Ui {
            app: app.clone(),
            window,
            toasts,
            pages,
            views,
            title,
            pause,
            sync_now,
            prefs_button,
            setup,
            status,
            files,
            feed,
            conflicts,
            commands,
            state: RefCell::new(State {
                dashboard: Dashboard::default(),
                feed: Feed::default(),
                live: LiveStatus::default(),
                conflicts: Vec::new(),
                started: None,
                dir: String::new(),
                rows: Vec::new(),
                more: 0,
                paused: false,
                history: None,
            }),
        });
        ui.set_main_controls_visible(false);
        ui.connect();
        // The update loop owns the window's state for as long as the app runs (signal handlers
        // hold weak references only).
        let owner = Rc::clone(&ui);
        glib::spawn_future_local(async move {
            while let Some(update) = updates.recv().await {
                owner.apply(update);
            }
        });
        Ok(ui)
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    fn toast(&self, text: &str) {
        self.toasts.add_toast(adw::Toast::new(text));
    }

    fn set_main_controls_visible(&self, visible: bool) {
        self.title.set_view_switcher_enabled(visible);
        self.pause.set_visible(visible);
        self.sync_now.set_visible(visible);
        self.prefs_button.set_visible(visible);
    }

    /// Wires signals and keyboard shortcuts.
    fn connect(self: &Rc<Self>) {
        // Setup form.
        let on_change = {
            let ui = Rc::downgrade(self);
            move || {
                if let Some(ui) = ui.upgrade() {
                    ui.validate_setup(false);
                }
            }
        };
        for entry in [
            self.setup.server.clone().upcast::<gtk::Editable>(),
            self.setup.username.clone().upcast(),
            self.setup.email.clone().upcast(),
            self.setup.password.clone().upcast(),
            self.setup.folder.clone().upcast(),
        ] {
            let on_change = on_change.clone();
            entry.connect_changed(move |_| on_change());
        }
        {
            let ui = Rc::downgrade(self);
            self.setup.register.connect_active_notify(move |switch| {
                if let Some(ui) = ui.upgrade() {
                    ui.setup.email.set_visible(switch.is_active());
                    ui.setup.submit.set_label(if switch.is_active() {
                        "Create Account and Sync"
                    } else {
                        "Log In and Sync"
                    });
                    ui.validate_setup(false);
                }
            });
        }
        {
            let ui = Rc::downgrade(self);
            self.setup.submit.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.submit_setup();
                }
            });
        }
        for entry in [
            self.setup.server.clone().upcast::<adw::EntryRow>(),
            self.setup.username.clone(),
            self.setup.email.clone(),
            self.setup.password.clone().upcast(),
            self.setup.folder.clone(),
        ] {
            let ui = Rc::downgrade(self);
            entry.connect_entry_activated(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.submit_setup();
                }
            });
        }
        // Header buttons.
        {
            let ui = Rc::downgrade(self);
            self.pause.connect_toggled(move |button| {
                if let Some(ui) = ui.upgrade() {
                    let paused = button.is_active();
                    if ui.state.borrow().paused != paused {
                        ui.state.borrow_mut().paused = paused;
                        ui.send(if paused {
                            Command::Pause
                        } else {
                            Command::Resume
                        });
                    }
                }
            });
        }
        {
            let ui = Rc::downgrade(self);
            self.sync_now.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.send(Command::SyncNow);
                }
            });
        }
        {
            let ui = Rc::downgrade(self);
            self.prefs_button.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.show_preferences();
                }
            });
        }
        // Files.
        {
            let ui = Rc::downgrade(self);
            self.files.up.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    let parent = model::parent_of(&ui.state.borrow().dir);
                    ui.browse(parent);
                }
            });
        }
        {
            let ui = Rc::downgrade(self);
            self.status.conflicts.connect_activated(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.views.set_visible_child_name("conflicts");
                }
            });
        }
        {
            let ui = Rc::downgrade(self);
            self.status.folder.connect_activated(move |_| {
                if let Some(ui) = ui.upgrade()
                    && let Some(started) = &ui.state.borrow().started
                {
                    open_path(&started.folder);
                }
            });
        }
        // Refresh the file list when its page is shown.
        {
            let ui = Rc::downgrade(self);
            self.views.connect_visible_child_name_notify(move |views| {
                if let Some(ui) = ui.upgrade()
                    && views.visible_child_name().as_deref() == Some("files")
                {
                    let dir = ui.state.borrow().dir.clone();
                    ui.browse(dir);
                }
            });
        }
        // Closing the window stops the sync this app runs, then quits.
        {
            let ui = Rc::downgrade(self);
            self.window.connect_close_request(move |window| {
                if let Some(ui) = ui.upgrade() {
                    window.set_visible(false);
                    ui.send(Command::Quit);
                }
                glib::Propagation::Stop
            });
        }
        // Actions and shortcuts.
        let actions: [(&str, &[&str]); 8] = [
            ("show-status", &["<Alt>1"]),
            ("show-files", &["<Alt>2"]),
            ("show-activity", &["<Alt>3"]),
            ("show-conflicts", &["<Alt>4"]),
            ("sync-now", &["F5"]),
            ("preferences", &["<Control>comma"]),
            ("close", &["<Control>q", "<Control>w"]),
            ("history", &["<Control>h"]),
        ];
        for (name, accels) in actions {
            let action = gio::SimpleAction::new(name, None);
            let ui = Rc::downgrade(self);
            let action_name = name.to_owned();
            action.connect_activate(move |_, _| {
                if let Some(ui) = ui.upgrade() {
                    ui.activate(&action_name);
                }
            });
            self.window.add_action(&action);
            self.app
                .set_accels_for_action(&format!("win.{name}"), accels);
        }
    }

    fn activate(self: &Rc<Self>, action: &str) {
        let started = self.state.borrow().started.is_some();
        match action {
            "close" => {
                self.window.close();
            }
            _ if !started => {}
            "show-status" => self.views.set_visible_child_name("status"),
            "show-files" => self.views.set_visible_child_name("files"),
            "show-activity" => self.views.set_visible_child_name("activity"),
            "show-conflicts" => self.views.set_visible_child_name("conflicts"),
            "sync-now" => self.send(Command::SyncNow),
            "preferences" => self.show_preferences(),
            "history" => {
                // The history of the first file in the current listing (keyboard users can also
                // tab to a row's history button).
                let path = self
                    .state
                    .borrow()
                    .rows
                    .iter()
                    .find(|r| !r.facts.is_dir)
                    .map(|r| r.path.clone());
                if let Some(path) = path {
                    self.show_history(&path);
                }
            }
            _ => {}
        }
    }

    // ----- setup -----

    fn form(&self) -> SetupForm {
        SetupForm {
            server: self.setup.server.text().to_string(),
            username: self.setup.username.text().trim().to_owned(),
            email: self.setup.email.text().to_string(),
            password: self.setup.password.text().to_string(),
            folder: self.setup.folder.text().to_string(),
            register: self.setup.register.is_active(),
        }
    }

    fn validate_setup(&self, submitting: bool) -> bool {
        let form = self.form();
        let problems = form.problems(submitting);
        let rows = [
            (
                Field::Server,
                self.setup.server.clone().upcast::<gtk::Widget>(),
            ),
            (Field::Username, self.setup.username.clone().upcast()),
            (Field::Email, self.setup.email.clone().upcast()),
            (Field::Password, self.setup.password.clone().upcast()),
            (Field::Folder, self.setup.folder.clone().upcast()),
        ];
        for (field, row) in &rows {
            if problems.iter().any(|(f, _)| f == field) {
                row.add_css_class("error");
            } else {
                row.remove_css_class("error");
            }
        }
        let first = problems
            .iter()
            .find(|(_, p)| p != "required")
            .or(problems.first());
        match first {
            Some((field, problem)) => {
                let name = match field {
                    Field::Server => "Server",
                    Field::Username => "Username",
                    Field::Email => "Email",
                    Field::Password => "Password",
                    Field::Folder => "Folder",
                };
                self.setup.problem.set_text(&format!("{name}: {problem}"));
                self.setup.problem.remove_css_class("dim-label");
                self.setup.problem.add_css_class("error");
            }
            None => {
                self.setup.problem.set_text(if form.ready() {
                    "Ready."
                } else {
                    "Fill in the fields above."
                });
                self.setup.problem.remove_css_class("error");
                self.setup.problem.add_css_class("dim-label");
            }
        }
        self.setup.submit.set_sensitive(form.ready());
        problems.is_empty()
    }

    fn submit_setup(&self) {
        if !self.validate_setup(true) {
            return;
        }
        self.setup.submit.set_sensitive(false);
        self.setup.spinner.set_spinning(true);
        self.setup.spinner.set_visible(true);
        self.setup
            .problem
            .set_text(if self.setup.register.is_active() {
                "Creating your account…"
            } else {
                "Logging in…"
            });
        self.setup.problem.remove_css_class("error");
        self.send(Command::Setup(self.form()));
    }

    // ----- updates -----

    fn apply(self: &Rc<Self>, update: Update) {
        match update {
            Update::NeedsSetup(form) => {
                self.setup.server.set_text(&form.server);
                self.setup.username.set_text(&form.username);
                self.setup.folder.set_text(&form.folder);
                self.setup.spinner.set_visible(false);
                self.pages.set_visible_child_name("setup");
                self.set_main_controls_visible(false);
                self.validate_setup(false);
                self.setup.submit.set_sensitive(self.form().ready());
                if form.username.is_empty() {
                    self.setup.username.grab_focus();
                } else {
                    self.setup.password.grab_focus();
                }
            }
            Update::SetupFailed(message) => {
                self.setup.spinner.set_visible(false);
                self.setup.problem.set_text(&message);
                self.setup.problem.remove_css_class("dim-label");
                self.setup.problem.add_css_class("error");
                self.setup.submit.set_sensitive(true);
                if self.pages.visible_child_name().as_deref() == Some("loading") {
                    self.pages.set_visible_child_name("setup");
                }
            }
            Update::Started(started) => {
                self.setup.password.set_text("");
                self.pages.set_visible_child_name("main");
                self.set_main_controls_visible(true);
                {
                    let mut state = self.state.borrow_mut();
                    state.dashboard = Dashboard::default();
                    state.dashboard.attached_pid = started.attached_pid;
                    state.dashboard.folder = started.folder.display().to_string();
                    state.dashboard.server.clone_from(&started.server);
                    state.started = Some(started);
                    state.dir = String::new();
                }
                self.render_status();
                self.send(Command::Browse(String::new()));
            }
            Update::Status(status) => {
                {
                    let mut state = self.state.borrow_mut();
                    state.dashboard.apply_status(&status);
                    state.live.apply_state(&status.state);
                    state.paused = status.paused;
                }
                if self.pause.is_active() != status.paused {
                    self.pause.set_active(status.paused);
                }
                self.render_status();
            }
            Update::Event(event) => self.apply_event(&event),
            Update::Reachability(outcome) => {
                self.state
                    .borrow_mut()
                    .dashboard
                    .apply_reachability(outcome);
                self.render_status();
            }
            Update::Listing { dir, rows, more } => {
                {
                    let mut state = self.state.borrow_mut();
                    state.dir = dir;
                    state.rows = rows;
                    state.more = more;
                }
                self.render_files();
            }
            Update::Versions { path, result } => self.render_history(&path, result),
            Update::Conflicts(records) => {
                {
                    let mut state = self.state.borrow_mut();
                    state.live.set_conflicts(&records);
                    state.dashboard.conflicts = records.len();
                    state.conflicts = records;
                }
                self.render_conflicts();
                self.render_status();
            }
            Update::Toast(text) => self.toast(&text),
            Update::CloseRequested => {
                self.window.close();
            }
            Update::Stopped => {
                if let Some((window, _, _)) = self.state.borrow_mut().history.take() {
                    window.destroy();
                }
                self.window.destroy();
                self.app.quit();
            }
        }
    }

    fn apply_event(self: &Rc<Self>, event: &FeedEvent) {
        let item = {
            let mut state = self.state.borrow_mut();
            state.dashboard.apply_event(event, now_seconds());
            state.live.apply(event);
            state.feed.apply(event, now_unix()).cloned()
        };
        if let Some(item) = item {
            self.feed.empty.set_visible(false);
            self.feed.list.set_visible(true);
            let row = adw::ActionRow::builder()
                .title(glib::markup_escape_text(&item.text).as_str())
                .subtitle(model::clock(item.at))
                .build();
            row.add_prefix(&gtk::Image::from_icon_name(item.kind.icon()));
            self.feed.list.prepend(&row);
            let mut count = 0;
            let mut child = self.feed.list.first_child();
            while let Some(widget) = child {
                count += 1;
                child = widget.next_sibling();
                if count > FEED_ROWS_MAX {
                    self.feed.list.remove(&widget);
                }
            }
        }
        if let FeedEvent::Conflict { path, copy, .. } = event {
            let notification = gio::Notification::new("Sync conflict");
            notification.set_body(Some(&match copy {
                Some(copy) => format!(
                    "{path} was changed here and on another device. Both versions are kept: yours is {copy}."
                ),
                None => format!(
                    "{path} was edited on one side and deleted on the other. The edit was kept."
                ),
            }));
            notification.set_default_action("app.activate");
            self.app
                .send_notification(Some("cairn-conflict"), &notification);
        }
        if matches!(
            event,
            FeedEvent::Summary(_) | FeedEvent::Progress { .. } | FeedEvent::Phase { .. }
        ) {
            self.render_status();
        }
        if matches!(event, FeedEvent::Summary(_))
            && self.views.visible_child_name().as_deref() == Some("files")
        {
            let dir = self.state.borrow().dir.clone();
            self.send(Command::Browse(dir));
        }
    }

    // ----- rendering -----

    fn render_status(&self) {
        let state = self.state.borrow();
        let d = &state.dashboard;
        let v = &self.status;
        v.icon.set_icon_name(Some(d.icon()));
        v.headline.set_text(&d.headline());
        v.last_sync.set_text(&d.last_sync_text(now_unix()));
        match d.transfer_text() {
            Some((text, fraction)) => {
                v.progress.set_visible(true);
                v.progress.set_fraction(fraction);
                v.transfer.set_visible(true);
                v.transfer.set_text(&text);
            }
            None => {
                v.progress.set_visible(false);
                v.transfer.set_visible(false);
            }
        }
        match (&d.error, &d.connection) {
            (Some((error, advice)), _) => {
                v.error_box.set_visible(true);
                v.error.set_text(error);
                v.advice.set_text(advice);
            }
            (None, model::Connection::Offline(reason)) => {
                v.error_box.set_visible(true);
                v.error
                    .set_text(&format!("The server does not answer: {reason}"));
                v.advice.set_text(
                    "Check your network and that the server runs. Changes wait here and sync when it is back.",
                );
            }
            (None, _) => match d.problems_text() {
                Some((heading, list)) => {
                    v.error_box.set_visible(true);
                    v.error.set_text(&heading);
                    v.advice.set_text(&list);
                }
                None => v.error_box.set_visible(false),
            },
        }
        v.server.set_subtitle(&glib::markup_escape_text(&d.server));
        if let Some(started) = &state.started {
            v.account.set_subtitle(&glib::markup_escape_text(&format!(
                "{} on device {}",
                started.username, started.device
            )));
        }
        v.folder.set_subtitle(&glib::markup_escape_text(&d.folder));
        match d.usage_text() {
            Some((text, fraction)) => {
                v.storage.set_subtitle(&text);
                v.storage_bar.set_value(fraction);
                v.storage_bar.set_visible(true);
            }
            None => {
                v.storage.set_subtitle("Not known yet");
                v.storage_bar.set_visible(false);
            }
        }
        v.conflicts.set_subtitle(&match d.conflicts {
            0 => "None".to_owned(),
            1 => "1 conflict needs a look".to_owned(),
            n => format!("{n} conflicts need a look"),
        });
        v.mode.set_subtitle(&match (d.attached_pid, d.watching) {
            (Some(pid), _) => format!("By `cairn sync` (pid {pid}); this window follows it"),
            (None, true) => "By this app; changes are seen as they happen".to_owned(),
            (None, false) => "By this app; the folder is scanned every few seconds".to_owned(),
        });
    }

    fn render_files(self: &Rc<Self>) {
        let state = self.state.borrow();
        let list = &self.files.list;
        clear(list);
        self.files.path.set_text(&if state.dir.is_empty() {
            "Top of the folder".to_owned()
        } else {
            state.dir.clone()
        });
        self.files.up.set_sensitive(!state.dir.is_empty());
        let Some(started) = &state.started else {
            return;
        };
        if state.rows.is_empty() {
            let row = adw::ActionRow::builder()
                .title("Nothing here yet")
                .subtitle("Files you put in this folder are synced to your other devices")
                .build();
            list.append(&row);
        }
        for file in &state.rows {
            let status = state.live.status(&file.path, &file.facts);
            let row = self.file_row(file, status, &started.folder);
            list.append(&row);
        }
        if state.more > 0 {
            list.append(
                &adw::ActionRow::builder()
                    .title(format!(
                        "…and {} more (open the folder to see all)",
                        state.more
                    ))
                    .build(),
            );
        }
    }

    fn file_row(
        self: &Rc<Self>,
        file: &FileRow,
        status: FileStatus,
        folder: &std::path::Path,
    ) -> adw::ActionRow {
        let subtitle = if file.facts.is_dir {
            status.label().to_owned()
        } else {
            format!(
                "{} · {}",
                status.label(),
                model::bytes(file.facts.on_disk.0)
            )
        };
        let row = adw::ActionRow::builder()
            .title(glib::markup_escape_text(&file.name).as_str())
            .subtitle(subtitle)
            .build();
        row.add_prefix(&gtk::Image::from_icon_name(if file.facts.is_dir {
            "folder-symbolic"
        } else {
            "text-x-generic-symbolic"
        }));
        let badge: gtk::Image = labelled("GtkImage", status.label());
        badge.set_icon_name(Some(status.icon()));
        badge.add_css_class(status.css());
        badge.set_tooltip_text(Some(status.label()));
        row.add_suffix(&badge);
        let full = folder.join(&file.path);
        if file.facts.is_dir {
            row.set_activatable(true);
            let ui = Rc::downgrade(self);
            let path = file.path.clone();
            row.connect_activated(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.browse(path.clone());
                }
            });
            let go = gtk::Image::from_icon_name("go-next-symbolic");
            row.add_suffix(&go);
        } else {
            let history = icon_button(
                "document-open-recent-symbolic",
                &format!("Version history of {}", file.name),
            );
            history.add_css_class("flat");
            history.set_valign(gtk::Align::Center);
            let ui = Rc::downgrade(self);
            let path = file.path.clone();
            history.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.show_history(&path);
                }
            });
            row.add_suffix(&history);
            let open = icon_button("document-open-symbolic", &format!("Open {}", file.name));
            open.add_css_class("flat");
            open.set_valign(gtk::Align::Center);
            let target = full.clone();
            open.connect_clicked(move |_| open_path(&target));
            row.add_suffix(&open);
            let reveal = icon_button(
                "folder-open-symbolic",
                &format!("Open the folder of {}", file.name),
            );
            reveal.add_css_class("flat");
            reveal.set_valign(gtk::Align::Center);
            let parent = full
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            reveal.connect_clicked(move |_| open_path(&parent));
            row.add_suffix(&reveal);
        }
        row
    }

    fn browse(self: &Rc<Self>, dir: String) {
        self.send(Command::Browse(dir));
    }

    fn render_conflicts(self: &Rc<Self>) {
        let state = self.state.borrow();
        let list = &self.conflicts.list;
        clear(list);
        let rows = model::conflict_rows(&state.conflicts);
        self.conflicts.empty.set_visible(rows.is_empty());
        list.set_visible(!rows.is_empty());
        for c in rows {
            let row = adw::ActionRow::builder()
                .title(glib::markup_escape_text(&c.title).as_str())
                .subtitle(glib::markup_escape_text(&c.subtitle).as_str())
                .subtitle_lines(3)
                .build();
            row.add_prefix(&gtk::Image::from_icon_name("dialog-warning-symbolic"));
            let choices: Vec<(&str, Keep, &str)> = if c.has_copy {
                vec![
                    (
                        "Keep Mine",
                        Keep::Local,
                        "Put your version back at the path",
                    ),
                    (
                        "Keep Theirs",
                        Keep::Remote,
                        "Delete your copy; keep the other device's version",
                    ),
                    (
                        "Keep Both",
                        Keep::Both,
                        "Keep your copy as a file of its own",
                    ),
                ]
            } else {
                vec![(
                    "Done",
                    Keep::Both,
                    "The edit was kept; forget this conflict",
                )]
            };
            let buttons = gtk::Box::new(gtk::Orientation::Horizontal, 6);
            buttons.set_valign(gtk::Align::Center);
            for (label, keep, tooltip) in choices {
                let button = gtk::Button::with_label(label);
                button.set_tooltip_text(Some(tooltip));
                let ui = Rc::downgrade(self);
                let index = c.index;
                button.connect_clicked(move |_| {
                    if let Some(ui) = ui.upgrade() {
                        ui.send(Command::Resolve { index, keep });
                    }
                });
                buttons.append(&button);
            }
            row.add_suffix(&buttons);
            list.append(&row);
        }
    }

    // ----- history -----

    fn show_history(self: &Rc<Self>, path: &str) {
        let window = adw::Window::builder()
            .transient_for(&self.window)
            .modal(true)
            .title(format!("History of {path}"))
            .default_width(560)
            .default_height(460)
            .build();
        let header = adw::HeaderBar::new();
        let title = adw::WindowTitle::new("Version history", path);
        header.set_title_widget(Some(&title));
        let list = gtk::ListBox::builder()
            .selection_mode(gtk::SelectionMode::None)
            .build();
        list.add_css_class("boxed-list");
        let spinner = gtk::Spinner::builder().spinning(true).build();
        let loading = adw::ActionRow::builder()
            .title("Asking the server…")
            .build();
        loading.add_suffix(&spinner);
        list.append(&loading);
        let body = gtk::Box::new(gtk::Orientation::Vertical, 0);
        body.append(&header);
        body.append(&scrolled(&clamped(&list)));
        window.set_content(Some(&body));
        let close = gtk::EventControllerKey::new();
        let weak_window = window.downgrade();
        close.connect_key_pressed(move |_, key, _, _| {
            if key == gtk::gdk::Key::Escape
                && let Some(window) = weak_window.upgrade()
            {
                window.close();
                return glib::Propagation::Stop;
            }
            glib::Propagation::Proceed
        });
        window.add_controller(close);
        {
            let ui = Rc::downgrade(self);
            window.connect_close_request(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.state.borrow_mut().history = None;
                }
                glib::Propagation::Proceed
            });
        }
        self.state.borrow_mut().history = Some((window.clone(), list, path.to_owned()));
        window.present();
        self.send(Command::Versions(path.to_owned()));
    }

    fn render_history(
        self: &Rc<Self>,
        path: &str,
        result: Result<Vec<cairn_protocol::api::VersionInfo>, String>,
    ) {
        let state = self.state.borrow();
        let Some((_, list, shown)) = &state.history else {
            return;
        };
        if shown != path {
            return;
        }
        clear(list);
        let versions = match result {
            Ok(versions) => versions,
            Err(message) => {
                list.append(
                    &adw::ActionRow::builder()
                        .title("No history")
                        .subtitle(glib::markup_escape_text(&message).as_str())
                        .build(),
                );
                return;
            }
        };
        for v in model::version_rows(&versions) {
            let row = adw::ActionRow::builder()
                .title(v.title.as_str())
                .subtitle(glib::markup_escape_text(&v.subtitle).as_str())
                .build();
            row.add_prefix(&gtk::Image::from_icon_name(if v.deleted {
                "user-trash-symbolic"
            } else if v.current {
                "emblem-default-symbolic"
            } else {
                "document-open-recent-symbolic"
            }));
            if v.current {
                let label = gtk::Label::new(Some("Current"));
                label.add_css_class("dim-label");
                row.add_suffix(&label);
            }
            if !v.deleted {
                let copy = gtk::Button::with_label("Download Copy");
                copy.set_tooltip_text(Some("Save this version beside the file"));
                copy.set_valign(gtk::Align::Center);
                let ui = Rc::downgrade(self);
                let file = path.to_owned();
                let version = v.version;
                copy.connect_clicked(move |_| {
                    if let Some(ui) = ui.upgrade() {
                        ui.send(Command::SaveCopy {
                            path: file.clone(),
                            version,
                        });
                    }
                });
                row.add_suffix(&copy);
                if !v.current {
                    let restore = gtk::Button::with_label("Restore");
                    restore.add_css_class("suggested-action");
                    restore.set_tooltip_text(Some("Make this version the current one"));
                    restore.set_valign(gtk::Align::Center);
                    let ui = Rc::downgrade(self);
                    let file = path.to_owned();
                    restore.connect_clicked(move |_| {
                        if let Some(ui) = ui.upgrade() {
                            ui.send(Command::Restore {
                                path: file.clone(),
                                version,
                            });
                            if let Some((window, _, _)) = ui.state.borrow().history.clone() {
                                window.close();
                            }
                        }
                    });
                    row.add_suffix(&restore);
                }
            }
            list.append(&row);
        }
    }

    // ----- preferences -----

    fn show_preferences(self: &Rc<Self>) {
        let Some(started) = self.state.borrow().started.clone() else {
            return;
        };
        let window = adw::PreferencesWindow::builder()
            .transient_for(&self.window)
            .modal(true)
            .title("Preferences")
            .search_enabled(false)
            .default_width(620)
            .default_height(560)
            .build();
        // Search is off, but libadwaita 1.2 still builds its unnamed search entry.
        hide_all::<gtk::SearchEntry>(&window);
        let general = adw::PreferencesPage::builder()
            .title("General")
            .icon_name("emblem-system-symbolic")
            .build();

        let sync = adw::PreferencesGroup::builder().title("Syncing").build();
        let pause = labelled_switch("Pause syncing", self.state.borrow().paused);
        let pause_row = adw::ActionRow::builder()
            .title("Pause syncing")
            .subtitle("Changes wait here until you resume")
            .build();
        pause_row.add_suffix(&pause);
        pause_row.set_activatable_widget(Some(&pause));
        {
            let ui = Rc::downgrade(self);
            pause.connect_active_notify(move |switch| {
                if let Some(ui) = ui.upgrade() {
                    ui.pause.set_active(switch.is_active());
                }
            });
        }
        sync.add(&pause_row);
        let autostart = labelled_switch("Start at login", started.autostart);
        let autostart_row = adw::ActionRow::builder()
            .title("Start at login")
            .subtitle("Sync in the background from the moment you log in")
            .build();
        autostart_row.add_suffix(&autostart);
        autostart_row.set_activatable_widget(Some(&autostart));
        {
            let ui = Rc::downgrade(self);
            autostart.connect_active_notify(move |switch| {
                if let Some(ui) = ui.upgrade() {
                    ui.send(Command::SetAutostart(switch.is_active()));
                    if let Some(started) = &mut ui.state.borrow_mut().started {
                        started.autostart = switch.is_active();
                    }
                }
            });
        }
        sync.add(&autostart_row);
        let copies = labelled_switch("Keep conflict copies", started.conflict_copies);
        let copies_row = adw::ActionRow::builder()
            .title("Keep conflict copies")
            .subtitle(
                "When a file changed here and elsewhere, keep your version beside theirs. \
                 Off: yours is kept in the version history only.",
            )
            .build();
        copies_row.add_suffix(&copies);
        copies_row.set_activatable_widget(Some(&copies));
        {
            let ui = Rc::downgrade(self);
            copies.connect_active_notify(move |switch| {
                if let Some(ui) = ui.upgrade() {
                    ui.send(Command::SetConflictCopies(switch.is_active()));
                    if let Some(started) = &mut ui.state.borrow_mut().started {
                        started.conflict_copies = switch.is_active();
                    }
                }
            });
        }
        sync.add(&copies_row);
        general.add(&sync);

        let bandwidth = adw::PreferencesGroup::builder()
            .title("Bandwidth")
            .description(
                "Limits in KiB/s; leave empty for no limit. They apply from the next sync.",
            )
            .build();
        let up = adw::EntryRow::builder()
            .title("Upload limit (KiB/s)")
            .show_apply_button(true)
            .build();
        let down = adw::EntryRow::builder()
            .title("Download limit (KiB/s)")
            .show_apply_button(true)
            .build();
        up.set_text(&started.limits.0.map(|l| l.to_string()).unwrap_or_default());
        down.set_text(&started.limits.1.map(|l| l.to_string()).unwrap_or_default());
        for row in [&up, &down] {
            let ui = Rc::downgrade(self);
            let (up, down) = (up.clone(), down.clone());
            row.connect_apply(move |_| {
                let Some(ui) = ui.upgrade() else { return };
                let parsed = (
                    model::parse_limit(&up.text()),
                    model::parse_limit(&down.text()),
                );
                for (row, value) in [(&up, &parsed.0), (&down, &parsed.1)] {
                    if value.is_err() {
                        row.add_css_class("error");
                    } else {
                        row.remove_css_class("error");
                    }
                }
                if let (Ok(up_limit), Ok(down_limit)) = parsed {
                    ui.send(Command::SetLimits {
                        up: up_limit,
                        down: down_limit,
                    });
                    if let Some(started) = &mut ui.state.borrow_mut().started {
                        started.limits = (up_limit, down_limit);
                    }
                    ui.toast("Bandwidth limits saved");
                }
            });
            bandwidth.add(row);
        }
        general.add(&bandwidth);

        let account = adw::PreferencesGroup::builder()
            .title("Account")
            .description(
                "A new folder is synced from the moment you apply it. \
                 A new server asks you to log in there.",
            )
            .build();
        let folder_row = adw::EntryRow::builder()
            .title("Synced folder")
            .show_apply_button(true)
            .build();
        folder_row.set_text(&started.folder.display().to_string());
        let server_row = adw::EntryRow::builder()
            .title("Server")
            .show_apply_button(true)
            .build();
        server_row.set_text(&started.server);
        for (row, is_folder) in [(&folder_row, true), (&server_row, false)] {
            let ui = Rc::downgrade(self);
            let window = window.downgrade();
            row.connect_apply(move |row| {
                let Some(ui) = ui.upgrade() else { return };
                let text = row.text().to_string();
                ui.state.borrow_mut().started = None;
                ui.pages.set_visible_child_name("loading");
                ui.set_main_controls_visible(false);
                ui.send(if is_folder {
                    Command::ChangeFolder(text)
                } else {
                    Command::ChangeServer(text)
                });
                if let Some(window) = window.upgrade() {
                    window.close();
                }
            });
            account.add(row);
        }
        for (title, value) in [
            ("Account", started.username.clone()),
            ("Device", started.device.clone()),
        ] {
            let row = adw::ActionRow::builder()
                .title(title)
                .subtitle(glib::markup_escape_text(&value).as_str())
                .build();
            account.add(&row);
        }
        let logout = gtk::Button::with_label("Log Out");
        logout.add_css_class("destructive-action");
        logout.set_valign(gtk::Align::Center);
        let logout_row = adw::ActionRow::builder()
            .title("Log out of this device")
            .subtitle("Stops syncing; your files stay here and on the server")
            .build();
        logout_row.add_suffix(&logout);
        {
            let ui = Rc::downgrade(self);
            let window = window.downgrade();
            logout.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    ui.state.borrow_mut().started = None;
                    ui.pages.set_visible_child_name("loading");
                    ui.set_main_controls_visible(false);
                    ui.send(Command::LogOut);
                }
                if let Some(window) = window.upgrade() {
                    window.close();
                }
            });
        }
        account.add(&logout_row);
        general.add(&account);
        window.add(&general);

        let ignored = adw::PreferencesPage::builder()
            .title("Ignored Files")
            .icon_name("action-unavailable-symbolic")
            .build();
        let group = adw::PreferencesGroup::builder()
            .title(".cairnignore")
            .description("One pattern per line, as in .gitignore (e.g. *.tmp, build/). Matching files are never uploaded, downloaded or deleted. Editor swap files, Office lock files and .DS_Store are always ignored.")
            .build();
        let text: gtk::TextView = labelled("GtkTextView", "Ignore patterns");
        text.set_monospace(true);
        text.set_top_margin(8);
        text.set_bottom_margin(8);
        text.set_left_margin(8);
        text.set_right_margin(8);
        text.set_height_request(220);
        text.buffer().set_text(&started.ignore_text);
        let frame = gtk::Frame::builder().child(&text).build();
        group.add(&frame);
        let save = gtk::Button::with_label("Save");
        save.add_css_class("suggested-action");
        save.set_halign(gtk::Align::End);
        save.set_margin_top(12);
        {
            let ui = Rc::downgrade(self);
            let text = text.clone();
            save.connect_clicked(move |_| {
                if let Some(ui) = ui.upgrade() {
                    let buffer = text.buffer();
                    let body = buffer
                        .text(&buffer.start_iter(), &buffer.end_iter(), false)
                        .to_string();
                    if let Some(started) = &mut ui.state.borrow_mut().started {
                        started.ignore_text.clone_from(&body);
                    }
                    ui.send(Command::SaveIgnore(body));
                }
            });
        }
        group.add(&save);
        ignored.add(&group);
        window.add(&ignored);
        window.present();
    }
}

impl SetupView {
    fn build() -> SetupView {
        let page = gtk::Box::new(gtk::Orientation::Vertical, 18);
        let hero = adw::StatusPage::builder()
            .icon_name("folder-remote-symbolic")
            .title("Welcome to Cairn")
            .description("Keep a folder the same on all your devices. Log in to your Cairn server, or create an account, and choose the folder to sync.")
            .build();
        hero.add_css_class("compact");
        page.append(&hero);
        let group = adw::PreferencesGroup::new();
        let server = adw::EntryRow::builder().title("Server address").build();
        let username = adw::EntryRow::builder().title("Username").build();
        let email = adw::EntryRow::builder()
            .title("Email")
            .visible(false)
            .build();
        let password = adw::PasswordEntryRow::builder().title("Password").build();
        // libadwaita 1.2's own peek button has no accessible name (a screen reader says
        // "GtkImage"): hide it and offer a named one that shows the text through the row's
        // GtkText.
        hide_all::<gtk::Button>(&password);
        let peek: gtk::ToggleButton = labelled("GtkToggleButton", "Show password");
        peek.set_icon_name("view-reveal-symbolic");
        peek.set_tooltip_text(Some("Show password"));
        peek.add_css_class("flat");
        peek.set_valign(gtk::Align::Center);
        {
            let text = password
                .delegate()
                .and_then(|d| d.downcast::<gtk::Text>().ok());
            peek.connect_toggled(move |button| {
                if let Some(text) = &text {
                    text.set_visibility(button.is_active());
                }
            });
        }
        password.add_suffix(&peek);
        let folder = adw::EntryRow::builder().title("Folder to sync").build();
        let choose = icon_button("folder-open-symbolic", "Choose the folder");
        choose.add_css_class("flat");
        choose.set_valign(gtk::Align::Center);
        folder.add_suffix(&choose);
        let register = gtk::Switch::builder().valign(gtk::Align::Center).build();
        let register_row = adw::ActionRow::builder()
            .title("Create a new account")
            .subtitle("Off: log in with an account you have")
            .build();
        register_row.add_suffix(&register);
        register_row.set_activatable_widget(Some(&register));
        for row in [&server, &username, &email] {
            group.add(row);
        }
        group.add(&password);
        group.add(&folder);
        group.add(&register_row);
        page.append(&group);
        let problem = gtk::Label::builder()
            .wrap(true)
            .xalign(0.0)
            .label("Fill in the fields above.")
            .build();
        problem.add_css_class("dim-label");
        page.append(&problem);
        let actions = gtk::Box::new(gtk::Orientation::Horizontal, 12);
        actions.set_halign(gtk::Align::Center);
        let spinner = gtk::Spinner::builder().visible(false).build();
        let submit = gtk::Button::with_label("Log In and Sync");
        submit.add_css_class("suggested-action");
        submit.add_css_class("pill");
        submit.set_sensitive(false);
        actions.append(&spinner);
        actions.append(&submit);
        page.append(&actions);
        let root = scrolled(&clamped(&page)).upcast::<gtk::Widget>();
        {
            let folder = folder.clone();
            // The dialog must stay referenced while it is shown.
            let open: Rc<RefCell<Option<gtk::FileChooserNative>>> = Rc::default();
            choose.connect_clicked(move |button| {
                let parent = button.root().and_downcast::<gtk::Window>();
                let dialog = gtk::FileChooserNative::new(
                    Some("Choose the folder to sync"),
                    parent.as_ref(),
                    gtk::FileChooserAction::SelectFolder,
                    Some("_Choose"),
                    Some("_Cancel"),
                );
                let folder = folder.clone();
                let open_ref = Rc::clone(&open);
                dialog.connect_response(move |dialog, response| {
                    if response == gtk::ResponseType::Accept
                        && let Some(path) = dialog.file().and_then(|f| f.path())
                    {
                        folder.set_text(&path.display().to_string());
                    }
                    open_ref.borrow_mut().take();
                });
                dialog.show();
                *open.borrow_mut() = Some(dialog);
            });
        }
        SetupView {
            root,
            server,
            username,
            email,
            password,
            folder,
            register,
            problem,
            submit,
            spinner,
        }
    }
}

impl StatusView {
    fn build() -> StatusView {
        let page = gtk::Box::new(gtk::Orientation::Vertical, 18);
        let top = gtk::Box::new(gtk::Orientation::Horizontal, 18);
        let icon = gtk::Image::builder()
            .icon_name("emblem-synchronizing-symbolic")
            .pixel_size(64)
            .build();
        icon.add_css_class("accent");
        let texts = gtk::Box::new(gtk::Orientation::Vertical, 6);
        texts.set_valign(gtk::Align::Center);
        let headline = gtk::Label::builder().label("Starting…").xalign(0.0).build();
        headline.add_css_class("title-1");
        let last_sync = gtk::Label::builder()
            .label("Not synced yet")
            .xalign(0.0)
            .build();
        last_sync.add_css_class("dim-label");
        texts.append(&headline);
        texts.append(&last_sync);
        top.append(&icon);
        top.append(&texts);
        page.append(&top);
        let progress: gtk::ProgressBar = labelled("GtkProgressBar", "Transfer progress");
        progress.set_visible(false);
        let transfer = gtk::Label::builder()
            .xalign(0.0)
            .visible(false)
            .wrap(true)
            .build();
        transfer.add_css_class("numeric");
        page.append(&progress);
        page.append(&transfer);
        let error_box = gtk::Box::new(gtk::Orientation::Vertical, 6);
        error_box.add_css_class("card");
        error_box.set_visible(false);
        let error = gtk::Label::builder()
            .xalign(0.0)
            .wrap(true)
            .margin_top(12)
            .margin_start(12)
            .margin_end(12)
            .build();
        error.add_css_class("heading");
        error.add_css_class("error");
        let advice = gtk::Label::builder()
            .xalign(0.0)
            .wrap(true)
            .margin_bottom(12)
            .margin_start(12)
            .margin_end(12)
            .build();
        error_box.append(&error);
        error_box.append(&advice);
        page.append(&error_box);
        let group = adw::PreferencesGroup::builder()
            .title("This device")
            .build();
        let row = |title: &str, icon: &str| {
            let row = adw::ActionRow::builder().title(title).subtitle("…").build();
            row.add_prefix(&gtk::Image::from_icon_name(icon));
            row
        };
        let server = row("Server", "network-server-symbolic");
        let account = row("Account", "avatar-default-symbolic");
        let folder = row("Folder", "folder-symbolic");
        folder.set_activatable(true);
        folder.add_suffix(&gtk::Image::from_icon_name("folder-open-symbolic"));
        folder.set_tooltip_text(Some("Open the folder"));
        let storage = row("Storage", "drive-harddisk-symbolic");
        let storage_bar: gtk::LevelBar = labelled("GtkLevelBar", "Storage used");
        storage_bar.set_min_value(0.0);
        storage_bar.set_max_value(1.0);
        storage_bar.set_width_request(160);
        storage_bar.set_valign(gtk::Align::Center);
        storage_bar.set_visible(false);
        storage.add_suffix(&storage_bar);
        let conflicts = row("Conflicts", "dialog-warning-symbolic");
        conflicts.set_activatable(true);
        conflicts.add_suffix(&gtk::Image::from_icon_name("go-next-symbolic"));
        let mode = row("Synced", "emblem-synchronizing-symbolic");
        for r in [&server, &account, &folder, &storage, &conflicts, &mode] {
            group.add(r);
        }
        page.append(&group);
        StatusView {
            root: scrolled(&clamped(&page)).upcast(),
            icon,
            headline,
            last_sync,
            progress,
            transfer,
            error_box,
            error,
            advice,
            server,
            account,
            folder,
            storage,
            storage_bar,
            conflicts,
            mode,
        }
    }
}

impl FilesView {
    fn build() -> FilesView {
        let page = gtk::Box::new(gtk::Orientation::Vertical, 12);
        let bar = gtk::Box::new(gtk::Orientation::Horizontal, 6);
        let up = icon_button("go-up-symbolic", "Up one folder");
        let path = gtk::Label::builder()
            .xalign(0.0)
            .hexpand(true)
            .ellipsize(gtk::pango::EllipsizeMode::Start)
            .build();
        path.add_css_class("heading");
        bar.append(&up);
        bar.append(&path);
        page.append(&bar);
        let list: gtk::ListBox = labelled("GtkListBox", "Files in the folder");
        list.set_selection_mode(gtk::SelectionMode::None);
        list.add_css_class("boxed-list");
        page.append(&list);
        FilesView {
            root: scrolled(&clamped(&page)).upcast(),
            path,
            up,
            list,
        }
    }
}

impl FeedView {
    fn build() -> FeedView {
        let page = gtk::Box::new(gtk::Orientation::Vertical, 12);
        let empty = adw::StatusPage::builder()
            .icon_name("document-open-recent-symbolic")
            .title("No activity yet")
            .description("Uploads, downloads, deletions and conflicts show here as they happen.")
            .build();
        let list: gtk::ListBox = labelled("GtkListBox", "Activity");
        list.set_selection_mode(gtk::SelectionMode::None);
        list.set_visible(false);
        list.add_css_class("boxed-list");
        page.append(&empty);
        page.append(&list);
        FeedView {
            root: scrolled(&clamped(&page)).upcast(),
            list,
            empty,
        }
    }
}

impl ConflictsView {
    fn build() -> ConflictsView {
        let page = gtk::Box::new(gtk::Orientation::Vertical, 12);
        let empty = adw::StatusPage::builder()
            .icon_name("emblem-ok-symbolic")
            .title("No conflicts")
            .description("When a file changes here and on another device at once, both versions are kept and the choice shows here.")
            .build();
        let list: gtk::ListBox = labelled("GtkListBox", "Conflicts");
        list.set_selection_mode(gtk::SelectionMode::None);
        list.set_visible(false);
        list.add_css_class("boxed-list");
        page.append(&empty);
        page.append(&list);
        ConflictsView {
            root: scrolled(&clamped(&page)).upcast(),
            list,
            empty,
        }
    }
}
